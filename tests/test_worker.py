"""The drain against a real Redis and a stub upstream: results, retries, failures, caps, shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from taskq.scheduler import ALL_TYPES
from taskq.store import Store
from tests.support.clients import Client, async_client, inspected
from tests.support.drain import run_drain, settled
from tests.support.env import REAL_REDIS_URL
from tests.support.orgs import new_org
from tests.support.settings import make_settings
from tests.support.tasks import admit_tasks, counters, nonzero, request
from tests.support.upstream import Upstream

pytestmark = pytest.mark.redis


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream(latency=0.05) as server:
        yield server


@pytest.fixture
def wstore(real_redis: Client) -> Store:
    return Store(real_redis)


def test_drain_completes_every_task_and_charges_each_once(upstream: Upstream, wstore: Store) -> None:
    cfg = make_settings("worker", upstream=upstream.url)
    org = new_org(wstore).id
    ids = admit_tasks(wstore, cfg, org, [request(prompt=f"q{i}", priority=1 + i % 10) for i in range(60)])
    stats = run_drain(cfg, settled(wstore, org))
    assert stats["ack"] == 60
    records = [wstore.task(wstore.org(org), i) for i in ids]
    assert {r.status for r in records} == {"COMPLETED"}
    assert json.loads(records[0].result_json or "")["text"] == "answer to q0"
    assert nonzero(counters(wstore, org)) == {"credits": 10_000 - 60 * 5}
    assert sum(upstream.calls.values()) == 60


def test_retryable_error_waits_and_then_completes(upstream: Upstream, wstore: Store) -> None:
    cfg = make_settings("worker", upstream=upstream.url)
    org = new_org(wstore).id
    [tid] = admit_tasks(wstore, cfg, org, [request(prompt="flaky:2:a")])
    stats = run_drain(cfg, settled(wstore, org))
    record = wstore.task(wstore.org(org), tid)
    assert (record.status, record.attempts, stats["retry"]) == ("COMPLETED", 3, 2)
    assert nonzero(counters(wstore, org)) == {"credits": 9_995}


def test_retryable_error_fails_with_its_code_once_attempts_run_out(upstream: Upstream, wstore: Store) -> None:
    cfg = make_settings("worker", upstream=upstream.url, max_attempts=2)
    org = new_org(wstore).id
    [tid] = admit_tasks(wstore, cfg, org, [request(prompt="fail:503", webhook="https://example.com/h")])
    run_drain(cfg, settled(wstore, org))
    record = wstore.task(wstore.org(org), tid)
    assert (record.status, record.attempts, record.charged) == ("FAILED", 2, 0)
    assert json.loads(record.error_json or "")["code"] == "PROVIDER_UNAVAILABLE"
    assert nonzero(counters(wstore, org)) == {"credits": 10_000}
    assert wstore.client.zcard(wstore.org(org).shard.wh_due) == 1


def test_permanent_error_fails_at_once_and_releases_the_credits(upstream: Upstream, wstore: Store) -> None:
    cfg = make_settings("worker", upstream=upstream.url)
    org = new_org(wstore).id
    [tid] = admit_tasks(wstore, cfg, org, [request(prompt="fail:400")])
    run_drain(cfg, settled(wstore, org))
    record = wstore.task(wstore.org(org), tid)
    assert (record.status, record.attempts) == ("FAILED", 1)
    assert json.loads(record.error_json or "")["code"] == "PROVIDER_REJECTED"
    assert nonzero(counters(wstore, org)) == {"credits": 10_000}


def test_a_bug_in_worker_code_fails_the_task_instead_of_hanging(upstream: Upstream, wstore: Store) -> None:
    cfg = make_settings("worker", upstream=upstream.url)
    org = new_org(wstore).id
    [tid] = admit_tasks(wstore, cfg, org, [request()])
    wstore.client.hset(wstore.org(org).shard.task(tid), "payload", "{not json")
    run_drain(cfg, settled(wstore, org))
    record = wstore.task(wstore.org(org), tid)
    assert record.status == "FAILED"
    assert json.loads(record.error_json or "")["code"] == "WORKER_ERROR"


def test_org_concurrency_bounds_calls_in_flight(upstream: Upstream, wstore: Store) -> None:
    upstream.latency = 0.1
    cfg = make_settings("worker", upstream=upstream.url)
    org = new_org(wstore, concurrency=3).id
    admit_tasks(wstore, cfg, org, [request(prompt=f"c{i}") for i in range(12)])
    run_drain(cfg, settled(wstore, org))
    assert upstream.peak == 3
    assert nonzero(counters(wstore, org)) == {"credits": 10_000 - 12 * 5}


def test_provider_cap_bounds_calls_in_flight_across_orgs(upstream: Upstream, wstore: Store) -> None:
    upstream.latency = 0.1
    cfg = make_settings("worker", upstream=upstream.url, provider_caps={"CHATGPT": 2})
    orgs = [new_org(wstore).id, new_org(wstore).id]
    for org in orgs:
        admit_tasks(wstore, cfg, org, [request(prompt=f"{org}{i}") for i in range(5)])
    run_drain(cfg, lambda: all(settled(wstore, org)() for org in orgs))
    assert upstream.peak == 2
    assert wstore.client.hget(wstore.org(orgs[0]).shard.pinflight, "CHATGPT") == "0"


def test_stop_lets_short_calls_finish_and_releases_long_ones_unharmed(
    upstream: Upstream, wstore: Store
) -> None:
    cfg = make_settings("worker", upstream=upstream.url, shutdown_grace_seconds=0.5)
    org = new_org(wstore).id
    quick = admit_tasks(wstore, cfg, org, [request(prompt=f"slow:0.2:{i}") for i in range(5)])
    slow = admit_tasks(wstore, cfg, org, [request(prompt=f"slow:30:{i}") for i in range(5)])
    stats = run_drain(cfg, lambda: counters(wstore, org)["inflight"] == 10)
    assert stats["released"] == 5 and stats["ack"] == 5
    assert {wstore.task(wstore.org(org), i).status for i in quick} == {"COMPLETED"}
    records = [wstore.task(wstore.org(org), i) for i in slow]
    assert {(r.status, r.attempts) for r in records} == {("QUEUED", 0)}
    assert nonzero(counters(wstore, org)) == {"credits": 9_975, "reserved": 25, "queued": 5, "q1": 5}
    shard = wstore.org(org).shard
    assert wstore.client.zcard(shard.proc) == 0
    assert all(wstore.client.hget(shard.pinflight, t) in (None, "0") for t in ALL_TYPES)


def test_the_reaper_requeues_a_dead_holders_tasks_when_their_lease_ends(wstore: Store) -> None:
    """With a 5 s reaper interval, tasks whose 1.5 s lease nobody renews are back in line within a
    moment of its end, not at the next interval; and the reaper stops when cancelled."""
    import time

    from taskq.asyncops import AsyncScheduler
    from taskq.scheduler import claim
    from taskq.store import now_ms
    from taskq.worker.leases import reap_forever
    from taskq.worker.loops import stop_tasks
    from tests.support.scheduler import Scheduler

    settings = make_settings(reaper_interval_seconds=5.0, lease_seconds=30.0)
    org = new_org(wstore).id
    ids = admit_tasks(wstore, settings, org, [request() for _ in range(3)])
    shard = wstore.org(org).shard
    claimed = Scheduler(wstore.client).run(
        claim(shard, {"CHATGPT": None}, now=now_ms(), lease_ms=1_500, k=3)
    )  # a holder that dies at once: nobody renews
    assert sorted(t.id for t in claimed) == sorted(ids)
    lease_end = max(int(inspected(wstore.client).zscore(shard.proc, t.id) or 0) for t in claimed)
    tokens = {t.id: t.token for t in claimed}

    def requeued() -> bool:  # each lease is gone: its task went back in line (and may run again)
        return all(wstore.client.hget(shard.task(i), "token") != tokens[i] for i in ids)

    async def run() -> tuple[float, int]:
        client = async_client(REAL_REDIS_URL)
        reaper = asyncio.create_task(reap_forever(AsyncScheduler(client), [shard], settings))
        try:
            while not requeued() and time.time() * 1000 < lease_end + 4_000:
                await asyncio.sleep(0.01)
            return time.time() * 1000 - lease_end, len(await stop_tasks([reaper], timeout=5))
        finally:
            await client.aclose()

    late_ms, still_running = asyncio.run(run())
    assert still_running == 0, "the reaper did not stop when cancelled"
    assert requeued() and 0 <= late_ms < 500, late_ms
