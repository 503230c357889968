"""Lease upkeep while a drain runs: renew every held lease in one call per shard, reap expired ones
(and, once a minute per shard, trim expired tasks from the org listings)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from taskq import keys
from taskq.asyncops import AsyncScheduler
from taskq.keys import Shard, shard_of
from taskq.scheduler import REAP_LIMIT, TRIM_LIMIT, Claimed, lost, reap, renew, trim_listing
from taskq.settings import Settings
from taskq.store import now_ms
from taskq.worker.execute import context
from taskq.worker.loops import pause, reraise_cancellation

log = logging.getLogger("taskq.worker")

SWEEP_INTERVAL_MS = 60_000
#: A wake-up for a lease's end comes this long after it, so the reap finds it expired.
EXPIRY_SLACK_MS = 20


class Leases:
    """The tasks this process holds, keyed by id, with the asyncio task running each.

    ``settling`` holds the ids whose outcome (ack, retry, fail) has been handed to Redis: a renewal
    may then find the lease already gone because that outcome applied, which is not a lost lease.
    Their calls are never cancelled; the outcome is fenced on its own and says whether it landed.

    A renewal (every third of the lease) extends the leases that ran half an interval or more since
    they were claimed or last renewed; one that ran less is extended at the next renewal, when it
    still has more than half its lease to run. Calls shorter than half an interval never cost a
    renewal (at 1,000 calls of a second in flight, renewing all of them every 10 s was about a tenth
    of Redis's work for the drain).
    """

    def __init__(self, ops: AsyncScheduler, settings: Settings) -> None:
        self.ops = ops
        self.settings = settings
        self.held: dict[str, tuple[Claimed, asyncio.Task[None]]] = {}
        self.settling: set[str] = set()
        self.lease_ms = int(settings.lease_seconds * 1000)
        self.interval = settings.lease_seconds / 3  # between renewals
        self.renewed: dict[str, int] = {}  # task id -> the deadline its last renewal set (ms)

    async def renew_once(self) -> int:
        """Extend the leases due (see the class); cancel the calls whose lease was lost (someone else
        runs them now)."""
        now = now_ms()
        fresh = now + self.lease_ms - int(self.interval * 500)  # deadlines past this are not due yet
        self.renewed = {i: until for i, until in self.renewed.items() if i in self.held}
        by_shard: dict[int, list[Claimed]] = defaultdict(list)
        for task, _ in self.held.values():
            if task.id not in self.settling and self.renewed.get(task.id, task.leased_until) <= fresh:
                by_shard[task.shard.index].append(task)
        deadline = now + self.lease_ms
        gone = 0
        for tasks in by_shard.values():
            lost = await self.ops.run(renew(tasks[0].shard, tasks, deadline=deadline))
            self.renewed.update((task.id, deadline) for task in tasks if task.id not in lost)
            for task_id in lost:
                entry = self.held.get(task_id)
                # Settling meanwhile (the reply raced its outcome): the outcome's own fence decides.
                if entry is not None and task_id not in self.settling:
                    log.warning(
                        "lease of task %s lost; abandoning its call", task_id, extra=context(entry[0])
                    )
                    entry[1].cancel()
                    gone += 1
        return gone

    async def renew_forever(self, on_tick: Callable[[], None] | None = None) -> None:
        while True:
            await pause(self.interval)
            if on_tick is not None:
                on_tick()
            try:
                await self.renew_once()
            except Exception:
                reraise_cancellation()
                log.exception("lease renewal failed; retrying next interval")


async def reap_once(
    ops: AsyncScheduler, shard: Shard, settings: Settings, *, due: bool = False
) -> int | None:
    """Requeue this shard's expired leases if no other worker reaped it within the reaper interval, or
    at once when due (a lease ran out just now: every worker that saw it coming reaps; the script
    moves each task once); return how many moved, None when another worker's turn it was."""
    interval_ms = max(100, int(settings.reaper_interval_seconds * 1000))
    if not await ops.client.set(shard.reaper, "1", nx=True, px=interval_ms) and not due:
        return None
    moved = 0
    for _ in range(20):  # bounded: at most 20 x REAP_LIMIT per round
        now = now_ms()
        reaped = await ops.run(
            reap(shard, now=now, max_attempts=settings.max_attempts, retention=settings.retention_seconds)
        )
        for task in reaped.exhausted:
            await ops.run(lost(task, now=now, retention=settings.retention_seconds))
        batch = reaped.requeued + len(reaped.exhausted)
        moved += batch
        if reaped.requeued:
            await ops.client.lpush(shard.wake, "reaped")  # idle workers claim them at once
        if batch < REAP_LIMIT:
            break
    if moved:
        log.info("reaped %s: %d expired leases requeued or failed", shard.tag, moved)
    return moved


async def sweep_once(ops: AsyncScheduler, shard: Shard, shards: int) -> int:
    """Trim the expired heads of this shard's org listings, at most once a minute per shard across all
    workers; return how many entries went."""
    if not await ops.client.set(shard.sweeper, "1", nx=True, px=SWEEP_INTERVAL_MS):
        return 0
    trimmed = 0
    for org_id in await ops.client.smembers(keys.ORGS):
        if shard_of(org_id, shards) != shard.index:
            continue
        for _ in range(20):  # bounded: at most 20 x TRIM_LIMIT per org and minute
            gone = await ops.run(trim_listing(shard, org_id))
            trimmed += gone
            if gone < TRIM_LIMIT:
                break
    if trimmed:
        log.info("swept %s: %d expired tasks trimmed from org listings", shard.tag, trimmed)
    return trimmed


async def next_expiry(ops: AsyncScheduler, shard: Shard) -> int | None:
    """When this shard's earliest lease runs out (ms), or None when nothing is leased."""
    head = await ops.client.zrange(shard.proc, 0, 0, withscores=True)
    return int(head[0][1]) if head else None


async def reap_forever(ops: AsyncScheduler, shards: list[Shard], settings: Settings) -> None:
    """Reap every reaper interval, and as soon as a lease runs out unrenewed before the next one: a
    dead worker's tasks go back in line when their lease ends, not up to an interval later."""
    due: set[int] = set()
    reaped_at: dict[int, int] = {}  # shard -> when this worker last reaped it (ms)
    while True:
        for shard in shards:
            try:
                started = now_ms()
                if await reap_once(ops, shard, settings, due=shard.index in due) is not None:
                    reaped_at[shard.index] = started
                await sweep_once(ops, shard, settings.shards)
            except Exception:
                reraise_cancellation()
                log.exception("reaper failed on %s; retrying next interval", shard.tag)
        wait_ms, due = settings.reaper_interval_seconds * 1000, set()
        for shard in shards:  # live holders renew a third of a lease ahead: no wake-up for them
            try:
                expiry = await next_expiry(ops, shard)
            except Exception:
                reraise_cancellation()
                continue
            # A lease that outlived a reap after its end is not woken for again (the reap left it,
            # e.g. to be failed by its caller): the interval paces those.
            if expiry is None or expiry <= reaped_at.get(shard.index, 0):
                continue
            if expiry - now_ms() < wait_ms:
                wait_ms = max(0, expiry - now_ms()) + EXPIRY_SLACK_MS
                due = {shard.index}
        await pause(wait_ms / 1000)
