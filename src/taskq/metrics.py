"""Operational figures kept in Redis (so every process and machine counts into one place) and read back.

The Lua scripts count into the shard's T:metrics hash (fields below) and into per-minute buckets
T:stats:<minute> (admitted, completed, failed) that expire after two hours. This module reads them for
/metrics (Prometheus text format) and for the dashboard.

T:metrics fields: ``admitted``, ``rejected:<CODE>``, ``claimed:<TYPE>``, ``completed:<TYPE>``,
``failed:<TYPE>:<CODE>``, ``retried:<TYPE>``, ``lease_expired``, ``sync_uncollected``, ``wh:<outcome>``,
``lat:<TYPE>:<bucket index>`` (their sum is the count), ``latsum:<TYPE>`` (ms).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from taskq import flow, keys
from taskq.keys import LATENCY_BUCKETS_MS, Shard
from taskq.redistypes import Redis


def count_rejections(client: Redis, shard: Shard, code: str, count: int) -> None:
    """Count admissions refused before the Lua call (schema, provider, webhook target)."""
    client.hincrby(shard.metrics, f"rejected:{code}", count)


def totals(client: Redis, shards: int) -> dict[str, int]:
    """The T:metrics counters summed over every shard."""
    summed: dict[str, int] = defaultdict(int)
    for index in range(shards):
        for field, value in client.hgetall(Shard(index).metrics).items():
            summed[field] += int(value)
    return dict(summed)


def minute_series(client: Redis, shards: int, minutes: int = 30) -> list[dict[str, int]]:
    """Admitted/completed/failed per minute for the last `minutes` minutes, oldest first."""
    now_minute = int(time.time() // 60)
    pipe = client.pipeline(transaction=False)
    for minute in range(now_minute - minutes + 1, now_minute + 1):
        for index in range(shards):
            pipe.hgetall(Shard(index).stats(minute))
    rows = pipe.execute()
    series = []
    for offset, minute in enumerate(range(now_minute - minutes + 1, now_minute + 1)):
        point = {"minute": minute * 60, "admitted": 0, "completed": 0, "failed": 0}
        for fields in rows[offset * shards : (offset + 1) * shards]:
            for name in ("admitted", "completed", "failed"):
                point[name] += int(fields.get(name, 0))
        series.append(point)
    return series


#: The lanes of the queue-depth gauges, highest first: 11 is the synchronous calls' lane
#: (taskq.scheduler.SYNC_PRIORITY), then the async priorities 10..1.
PRIORITIES = tuple(range(11, 0, -1))


def gauges(client: Redis, shards: int) -> dict[str, Any]:
    """Queue depth per priority (11: synchronous calls waiting for a worker) and per org, in flight per
    provider, webhook backlog."""
    orgs = sorted(client.smembers(keys.ORGS))
    from taskq.keys import shard_of

    pipe = client.pipeline(transaction=False)
    for org in orgs:
        shard = Shard(shard_of(org, shards))
        pipe.hmget(shard.org(org), ["name", "queued", "inflight", *[f"q{p}" for p in PRIORITIES]])
    per_org = []
    by_priority: dict[int, int] = defaultdict(int)
    for org, values in zip(orgs, pipe.execute() if orgs else [], strict=True):
        name, queued, inflight, *prios = values
        for p, count in zip(PRIORITIES, prios, strict=True):
            by_priority[p] += int(count or 0)
        per_org.append(
            {"org": org, "name": name, "queued": int(queued or 0), "processing": int(inflight or 0)}
        )
    by_provider: dict[str, int] = defaultdict(int)
    backlog = 0
    for index in range(shards):
        shard = Shard(index)
        for task_type, count in client.hgetall(shard.pinflight).items():
            by_provider[task_type] += int(count)
        backlog += int(client.zcard(shard.wh_due))
    return {
        "orgs": per_org,
        "byPriority": [{"priority": p, "count": by_priority[p]} for p in PRIORITIES],
        "inflightByProvider": dict(by_provider),
        "webhookBacklog": backlog,
    }


class RedisCollector(Collector):
    """Prometheus collector reading taskq's counters from Redis at scrape time."""

    def __init__(self, client: Redis, shards: int) -> None:
        self.client = client
        self.shards = shards

    def collect(self) -> Iterator[Metric]:  # noqa: C901 - one flat mapping of fields to families
        t = totals(self.client, self.shards)
        admissions = CounterMetricFamily(
            "taskq_admissions", "Tasks admitted or refused", labels=["outcome", "code"]
        )
        admissions.add_metric(["admitted", ""], t.get("admitted", 0))
        claims = CounterMetricFamily("taskq_claims", "Tasks claimed by workers", labels=["provider"])
        completions = CounterMetricFamily("taskq_completions", "Tasks completed", labels=["provider"])
        failures = CounterMetricFamily("taskq_failures", "Tasks failed", labels=["provider", "code"])
        retries = CounterMetricFamily("taskq_retries", "Provider calls retried", labels=["provider"])
        webhooks = CounterMetricFamily(
            "taskq_webhook_attempts", "Webhook delivery attempts", labels=["outcome"]
        )
        buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
        sums: dict[str, int] = defaultdict(int)
        for field, value in t.items():
            kind, _, rest = field.partition(":")
            if kind == "rejected":
                admissions.add_metric(["rejected", rest], value)
            elif kind == "claimed":
                claims.add_metric([rest], value)
            elif kind == "completed":
                completions.add_metric([rest], value)
            elif kind == "failed":
                provider, _, code = rest.partition(":")
                failures.add_metric([provider, code], value)
            elif kind == "retried":
                retries.add_metric([rest], value)
            elif kind == "wh":
                webhooks.add_metric([rest], value)
            elif kind == "lat":
                provider, _, bucket = rest.rpartition(":")
                buckets[provider][int(bucket)] += value
            elif kind == "latsum":
                sums[rest] += value
        yield from (admissions, claims, completions, failures, retries, webhooks)
        yield CounterMetricFamily(
            "taskq_lease_expiries", "Leases that expired", value=t.get("lease_expired", 0)
        )
        yield CounterMetricFamily(
            "taskq_sync_uncollected",
            "Synchronous calls that completed with no intake left to collect the answer (refunded)",
            value=t.get("sync_uncollected", 0),
        )
        latency = HistogramMetricFamily(
            "taskq_provider_latency_seconds", "Provider call latency", labels=["provider"]
        )
        for provider, counts in buckets.items():
            cumulative, points = 0, []
            for bound, count in zip([*LATENCY_BUCKETS_MS, None], counts, strict=True):
                cumulative += count
                points.append(("+Inf" if bound is None else str(bound / 1000), cumulative))
            latency.add_metric([provider], points, sum_value=sums[provider] / 1000)
        yield latency
        g = gauges(self.client, self.shards)
        depth = GaugeMetricFamily("taskq_queue_depth", "Queued tasks", labels=["priority"])
        for row in g["byPriority"]:
            depth.add_metric([str(row["priority"])], row["count"])
        yield depth
        inflight = GaugeMetricFamily("taskq_inflight", "Provider calls in flight", labels=["provider"])
        for provider, count in g["inflightByProvider"].items():
            inflight.add_metric([provider], count)
        yield inflight
        yield from lane_families(flow.status(_Shards(self.client, self.shards)))
        yield GaugeMetricFamily(
            "taskq_webhook_backlog", "Webhook deliveries waiting", value=g["webhookBacklog"]
        )


class _Shards:
    """What taskq.flow.status reads: a client and the shard count."""

    def __init__(self, client: Redis, shards: int) -> None:
        self.client, self.shards = client, shards


def lane_families(lanes: list[dict[str, Any]]) -> Iterator[Metric]:
    """Flow control per provider and key (taskq.flow.status): state, rates, calls, 429s, pauses."""
    labels = ["provider", "key"]
    gauge, counter = GaugeMetricFamily, CounterMetricFamily
    state = gauge("taskq_provider_key_state", "1 for the key's flow state", labels=[*labels, "state"])
    configured = gauge("taskq_provider_rate_configured", "Configured calls/s per key", labels=labels)
    learned = gauge("taskq_provider_rate_learned", "Rate learned from 429s (calls/s)", labels=labels)
    stated = gauge("taskq_provider_rate_stated", "Limit the provider states (calls/s)", labels=labels)
    tpm_configured = gauge("taskq_provider_tpm_configured", "Configured tokens/min per key", labels=labels)
    tpm_stated = gauge("taskq_provider_tpm_stated", "Tokens/min the provider states", labels=labels)
    tpm = gauge("taskq_provider_tpm", "Tokens/min claims limit the key to now", labels=labels)
    tokens = counter("taskq_provider_tokens", "Tokens charged to token-limited keys", labels=labels)
    in_force = gauge("taskq_provider_rate", "Calls/s claims pace the key at now", labels=labels)
    per_s = gauge("taskq_provider_calls_per_second", "Calls started in the last second", labels=labels)
    calls = counter("taskq_provider_calls", "Calls started under flow control", labels=labels)
    limited = counter("taskq_provider_rate_limited", "Upstream 429s (rate limits)", labels=labels)
    paused = gauge("taskq_provider_paused_until_seconds", "End of the key's pause", labels=labels)
    for lane in lanes:
        for key in lane["keys"]:
            at = [lane["provider"], key["key"]]
            key_state = "paused-by-operator" if lane["state"] == "paused-by-operator" else key["state"]
            state.add_metric([*at, key_state], 1)
            for family, value in (
                (configured, key["configuredRate"]),
                (learned, key["learnedRate"]),
                (in_force, key["rate"]),
                (stated, key["statedLimit"]),
                (tpm_configured, key["configuredTpm"]),
                (tpm_stated, key["learnedTpm"]),
                (tpm, key["tpm"]),
            ):
                if value is not None:
                    family.add_metric(at, value)
            per_s.add_metric(at, key["callsPerSecond"])
            calls.add_metric(at, key["calls"])
            limited.add_metric(at, key["rateLimited"])
            tokens.add_metric(at, key["tokens"])
            paused.add_metric(at, (key["pausedUntil"] or 0) / 1000)
    yield from (state, configured, learned, stated, in_force, tpm_configured, tpm_stated, tpm, tokens, per_s,
                calls, limited, paused)  # fmt: skip
