"""Provider flow control: lanes, their API keys, rate limits, pauses and quota state.

A **lane** is a task type; each API key of its pool is a **slot** named by a fingerprint (``k`` and 6
hex digits of the key's SHA-256; ``-`` for a provider without a key). The state lives in each shard's
T:flow hash (keys.FLOW_FIELDS) and is enforced inside claim.lua (flow_lib.lua): a worker only claims a
task whose call a key may make now. A refusal by the provider (throttle.lua) pauses the key for every
worker and puts the task back in line without spending an attempt.

Providers that state their limits (OpenAI's ``x-ratelimit-*`` headers, on every response) teach the
limiter without a 429: a ``Learner`` in each drain (worker/learning.py) turns what a call's responses
said into a note (flow_note.lua) only when it changes something: a new stated limit, a pause until a
call is allowed again when none remained, the tokens a call used against a tokens-per-minute limit.

The operator's functions, ``pause``, ``resume`` and ``status``, are what `taskq lane`, /metrics and the
dashboard call. With several shards each shard paces its own share: the configured rate is split
evenly between shards, and a 429 pauses the key in the shard of the task that met it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from taskq.keys import Shard
from taskq.providers import SPECS
from taskq.redistypes import Redis
from taskq.settings import Settings

#: Mirrors flow_lib.lua (slow start, AIMD), so status() shows the rate a claim would use.
SS_RATE, SS_DOUBLE_MS, UNLIMITED = 10.0, 100.0, 10000.0
AI_PER_S = 0.1
TICK_MS = 50  # a claim may start this much time's worth of calls at once
FOREVER_MS = 10**15
#: A worker announces its lanes every few seconds; a slot no worker announced for this long is stale.
STALE_MS = 60_000
NO_KEY = "-"


def fingerprint(api_key: str) -> str:
    """A non-secret name for an API key (``-`` for none)."""
    if not api_key:
        return NO_KEY
    return "k" + hashlib.sha256(api_key.encode()).hexdigest()[:6]


@dataclass(frozen=True, slots=True)
class Lane:
    """One task type's keys (fingerprint -> key) and its configured limits per key (0 = none): calls/s,
    burst and tokens/s, each this shard's share."""

    task_type: str
    keys: dict[str, str]
    rate: float
    burst: int
    tokens: float = 0.0

    @property
    def pool(self) -> list[str]:
        return list(self.keys)


def lanes(settings: Settings, task_types: Iterable[str]) -> dict[str, Lane]:
    """The lanes of these task types from the settings; each shard paces 1/shards of a configured rate."""
    out: dict[str, Lane] = {}
    for ttype in task_types:
        keys = {fingerprint(key): key for key in settings.provider_keys(ttype)}
        limit = settings.provider_rate(ttype)
        rate = limit.rps / settings.shards if limit else 0.0
        tokens = limit.tpm / 60 / settings.shards if limit and limit.tpm else 0.0
        out[ttype] = Lane(ttype, keys, rate, limit.burst if limit else 1, tokens)
    return out


def spec(settings: Settings, by_type: Mapping[str, Lane], *, clock: int | None = None) -> str:
    """The flow spec claim.lua reads (see flow_lib.lua)."""
    body: dict[str, Any] = {
        "lanes": {
            t: [[fp, lane.rate, lane.burst, lane.tokens] for fp in lane.keys] for t, lane in by_type.items()
        },
        "probe": int(settings.quota_probe_seconds * 1000),
        "ss": 1 if settings.rate_slow_start else 0,
    }
    if clock is not None:
        body["clock"] = clock
    return json.dumps(body, separators=(",", ":"))


def announcement(by_type: Mapping[str, Lane], now_ms: int) -> dict[str, Any]:
    """T:flow fields a worker writes every few seconds: each slot's configured limit and that it is live."""
    fields: dict[str, Any] = {}
    for ttype, lane in by_type.items():
        for fp in lane.keys:
            prefix = f"{ttype}/{fp}:"
            fields[prefix + "rate"] = lane.rate
            fields[prefix + "burst"] = lane.burst
            fields[prefix + "tps"] = lane.tokens
            fields[prefix + "seen"] = now_ms
    return fields


def recovered(task_type: str, fp: str) -> list[str]:
    """T:flow fields to delete when a quota probe succeeded: the key runs again."""
    return [f"{task_type}/{fp}:{name}" for name in ("quota", "pause", "why")]


class Sharded(Protocol):
    """What the operator's functions need of a ``taskq.store.Store`` (which this layer cannot import)."""

    @property
    def client(self) -> Redis: ...
    @property
    def shards(self) -> int: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


def _shards(store: Sharded) -> list[Shard]:
    return [Shard(i) for i in range(store.shards)]


def _check(provider: str) -> str:
    if provider.upper() in SPECS:
        return provider.upper()
    from taskq.errors import ValidationFailed

    raise ValidationFailed(f"unknown provider {provider!r}; one of {', '.join(SPECS)}")


def pause(store: Sharded, provider: str, reason: str, until: float | None = None) -> dict[str, Any]:
    """Stop claiming tasks of this provider (task type) on every worker, until `until` (epoch seconds)
    or until resumed. Its tasks stay QUEUED; calls in flight finish."""
    ttype = _check(provider)
    until_ms = FOREVER_MS if until is None else int(until * 1000)
    for shard in _shards(store):
        fields: dict[str, str | int] = {f"{ttype}:pause": until_ms, f"{ttype}:why": reason or "paused"}
        store.client.hset(shard.flow, mapping=fields)
    return {"provider": ttype, "paused": True, "until": None if until is None else until, "why": reason}


def resume(store: Sharded, provider: str) -> dict[str, Any]:
    """Run this provider again now: clears the operator's pause and every key's pause, exhausted quota
    and refused-key mark (learned rates stay). Returns what was cleared."""
    ttype = _check(provider)
    cleared = 0
    for shard in _shards(store):
        names = [f"{ttype}:pause", f"{ttype}:why"]
        for field in store.client.hkeys(shard.flow):
            slot, _, name = str(field).rpartition(":")
            if slot.startswith(ttype + "/") and name in ("pause", "why", "quota", "auth"):
                names.append(field)
        cleared += int(store.client.hdel(shard.flow, *names))
    return {"provider": ttype, "resumed": True, "cleared": cleared}


def _num(fields: Mapping[str, str], name: str) -> float | None:
    value = fields.get(name)
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def rate_now(slot: Mapping[str, str], now_ms: float, slow: bool = True) -> float | None:
    """The rate (calls/s) a claim paces this slot at now; None when it is not paced (flow_lib.slot_rate)."""
    cfg = _num(slot, "rate") or 0.0
    lcap = _num(slot, "lcap")
    ceiling = cfg if cfg > 0 else None
    if lcap is not None and (ceiling is None or lcap < ceiling):
        ceiling = lcap
    lrate = _num(slot, "lrate")
    if lrate is not None:
        r = lrate * (1 + AI_PER_S * max(0.0, now_ms - (_num(slot, "lset") or now_ms)) / 1000)
        if ceiling is not None:
            return min(r, ceiling)
        return r if r < UNLIMITED else None
    if ceiling is not None:
        return ceiling
    ss = _num(slot, "ss")
    if ss is None or not slow:
        return None
    r = SS_RATE * 2 ** min(64.0, (now_ms - ss) / SS_DOUBLE_MS)
    return r if r < UNLIMITED else None


def tokens_now(slot: Mapping[str, str]) -> float | None:
    """The token rate (tokens/s) a claim limits this slot to; None when tokens are not limited
    (flow_lib.slot_tps)."""
    rates = [r for r in (_num(slot, "tps"), _num(slot, "ltps")) if r]
    return min(rates) if rates else None


def _slot_state(slot: Mapping[str, str], lane_paused: bool, now: int) -> str:
    if lane_paused:
        return "paused-by-operator"
    if slot.get("auth") == "1":
        return "key-refused"
    if slot.get("quota") == "1":
        return "quota-exhausted"
    if (_num(slot, "pause") or 0) > now:
        return "paused"
    return "running"


def status(store: Sharded) -> list[dict[str, Any]]:
    """Every lane a worker announced or that has state: per key its state, configured and learned rate,
    the rate in force, the same for tokens per minute and the tokens charged, calls in the last second,
    429s, paused-until and the provider's message."""
    now = _now_ms()
    lanes_: dict[str, dict[str, Any]] = {}
    slots: dict[tuple[str, str], list[dict[str, str]]] = {}
    for shard in _shards(store):
        for field, value in store.client.hgetall(shard.flow).items():
            name, _, attr = str(field).rpartition(":")
            ttype, _, fp = name.partition("/")
            lane = lanes_.setdefault(ttype, {"pause": [], "why": ""})
            if not fp:
                if attr == "pause":
                    lane["pause"].append(int(float(value)))
                elif attr == "why":
                    lane["why"] = str(value)
                continue
            per_shard = slots.setdefault((ttype, fp), [])
            while len(per_shard) <= shard.index:
                per_shard.append({})
            per_shard[shard.index][attr] = str(value)
    rows = []
    for ttype in sorted(lanes_):
        lane = lanes_[ttype]
        paused_until = max(lane["pause"], default=0)
        lane_paused = paused_until > now
        keys_ = []
        for (t, fp), shards in sorted(slots.items()):
            if t != ttype:
                continue
            keys_.append(_key_row(fp, [s for s in shards if s], lane_paused, now))
        rows.append({
            "provider": ttype,
            "state": "paused-by-operator" if lane_paused else _lane_state(keys_),
            "pausedUntil": paused_until if lane_paused and paused_until < FOREVER_MS else None,
            "why": lane["why"] if lane_paused else "",
            "keys": keys_,
        })  # fmt: skip
    return rows


def _lane_state(keys_: Sequence[Mapping[str, Any]]) -> str:
    live = [k for k in keys_ if k["live"]] or list(keys_)
    states = {k["state"] for k in live}
    if not states or "running" in states:
        return "running"
    for state in ("paused", "quota-exhausted", "key-refused"):
        if state in states:
            return state
    return "running"


def _key_row(fp: str, shards: Sequence[Mapping[str, str]], lane_paused: bool, now: int) -> dict[str, Any]:
    """One key's row, its shards added up (rates and counts summed, the latest pause)."""

    def total(name: str) -> float:
        return sum(_num(s, name) or 0.0 for s in shards)

    learned = [_num(s, "lrate") for s in shards]
    in_force = [rate_now(s, now) for s in shards]
    states = [_slot_state(s, lane_paused, now) for s in shards]
    state = next((s for s in states if s != "running"), "running")
    pause = max((_num(s, "pause") or 0.0 for s in shards), default=0.0)
    second = now // 1000
    calls_per_s = sum(
        (_num(s, "wn") or 0.0) if _num(s, "w") == second - 1 else (_num(s, "pn") or 0.0)
        if _num(s, "w") == second else 0.0
        for s in shards
    )  # fmt: skip
    lcap = [_num(s, "lcap") for s in shards]
    ltps = [_num(s, "ltps") for s in shards]
    tps = [tokens_now(s) for s in shards]
    return {
        "key": fp,
        "state": state,
        "live": any(now - (_num(s, "seen") or 0) < STALE_MS for s in shards),
        "configuredRate": total("rate") or None,
        "learnedRate": round(sum(x for x in learned if x), 3) if any(learned) else None,
        "statedLimit": round(sum(x for x in lcap if x), 3) if any(lcap) else None,
        "rate": None if any(r is None for r in in_force) else round(sum(r for r in in_force if r), 3),
        "configuredTpm": round(total("tps") * 60, 3) or None,
        "learnedTpm": round(sum(x for x in ltps if x) * 60, 3) if any(ltps) else None,
        "tpm": None if any(t is None for t in tps) else round(sum(t for t in tps if t) * 60, 3),
        "tokens": int(total("tok")),
        "callsPerSecond": calls_per_s,
        "calls": int(total("calls")),
        "rateLimited": int(total("n429")),
        "pausedUntil": int(pause) if pause > now else None,
        "why": next((s.get("why", "") for s in shards if s.get("why")), "") if state != "running" else "",
    }
