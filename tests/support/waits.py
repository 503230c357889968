"""Waiting on a condition, and saying what was still stuck when the wait ran out."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from taskq.keys import Shard
from tests.support.clients import Client
from tests.support.tasks import org_counters, task_fields


def wait_for(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.05,
    stuck: Callable[[], str] | None = None,
    errors: tuple[type[BaseException], ...] = (),
) -> float:
    """Poll until check() is truthy; return the seconds it took. An exception of a type in `errors`
    (a server still starting) counts as not yet.

    On timeout the message says what was still stuck: stuck() (e.g. `stuck_work`) describes it.
    """
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except errors:
            pass
        if time.monotonic() - start >= timeout:
            detail = f"; still stuck: {stuck()}" if stuck is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(interval)


def stuck_work(
    client: Client, shard: Shard, org: str | None = None, ids: list[str] | None = None, sample: int = 5
) -> str:
    """What a shard still holds: the org's counters, tasks queued (per lane), leased, delayed, webhook
    deliveries waiting and being sent, with a few ids of each and their state (for timeout messages);
    with ids, how many of those tasks are in each (status, webhook state) and a few unfinished ones."""
    parts = []
    if ids:
        rows = task_fields(client, shard, ids, ["status", "wh_state", "d_log"])
        counts = Counter((status, wh_state) for status, wh_state, _ in rows)
        odd = [(i, r) for i, r in zip(ids, rows, strict=True) if r[:2] != ["COMPLETED", "delivered"]][:sample]
        shown = "; ".join(
            f"{i} {r[0]}/{r[1]} last attempt {(r[2] or '').rsplit(chr(10), 1)[-1]}" for i, r in odd
        )
        parts.append(f"tasks by (status, webhook state) {dict(counts)} (e.g. {shown})")
    if org is not None:
        parts.append(f"org counters {org_counters(client, shard, org)}")
    # The clients of the tests decode responses: members are str.
    for lane in sorted(cast(list[str], list(client.scan_iter(match=shard.lane("*", "*"), count=1000)))):
        queued = cast(list[str], client.zrange(lane, 0, sample - 1))
        parts.append(f"queued in {lane}: {client.zcard(lane)} (e.g. {_task_states(client, shard, queued)})")
    now = time.time() * 1000
    for name, key in (("leased", shard.proc), ("delayed", shard.delayed)):
        entries = cast(list[tuple[str, float]], client.zrange(key, 0, sample - 1, withscores=True))
        held = [i for i, _ in entries]
        due = ", ".join(f"{i} due in {(score - now) / 1000:.1f} s" for i, score in entries)
        parts.append(f"{name}: {client.zcard(key)} ({due}; {_task_states(client, shard, held)})")
    for name, key in (("webhooks waiting", shard.wh_due), ("webhooks being sent", shard.wh_proc)):
        entries = cast(list[tuple[str, float]], client.zrange(key, 0, sample - 1, withscores=True))
        sends: list[str] = []
        for delivery, score in entries:
            hash_key, prefix = shard.delivery_record(delivery)
            state, attempts, log = client.hmget(
                hash_key, [prefix + "state", prefix + "attempts", prefix + "log"]
            )
            last = (log or "").rsplit("\n", 1)[-1]
            next_in = (score - now) / 1000
            sends.append(
                f"{delivery} {state} after {attempts} attempts, next in {next_in:.1f} s, last attempt {last}"
            )
        parts.append(f"{name}: {client.zcard(key)} ({'; '.join(sends)})")
    return "; ".join(parts)


def _task_states(client: Client, shard: Shard, ids: list[Any]) -> str:
    fields = task_fields(client, shard, ids, ["status", "attempts", "error"])
    return ", ".join(f"{i} {status} attempts={attempts} {error or ''}".rstrip()
                     for i, (status, attempts, error) in zip(ids, fields, strict=True))  # fmt: skip
