"""The webhook loop: claim due deliveries, sign, send and record them, hundreds in flight.

Three parts make a webhook delivery, each with one job:

- ``taskq.deliveries``: the Redis side (claim, record, reap; the delivery history), script ops;
- ``taskq.webhooks``: the HTTP side of one attempt (signing, the SSRF guard, the sender, the retry
  delay), which knows nothing of Redis or settings, so the intake can import signing and ssrf;
- this module: the loop joining them in the worker, with the settings, the shards, the durable
  commits and the asyncio op runner.

The loop lives in the worker, not in ``taskq.webhooks``, because it needs Redis and the settings,
which the import contracts keep out of ``taskq.webhooks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from taskq import deliveries
from taskq.asyncops import AsyncScheduler
from taskq.deliveries import Claimed, Decision
from taskq.durability import AsyncCommitter
from taskq.keys import Shard
from taskq.redistypes import AsyncRedis
from taskq.settings import Settings
from taskq.store import now_ms
from taskq.webhooks import signing
from taskq.webhooks.sender import Attempt, WebhookSender, next_delay
from taskq.webhooks.ssrf import parse_networks
from taskq.worker.loops import reraise_cancellation

log = logging.getLogger(__name__)

IDLE_SECONDS = 0.1  # longest sleep when nothing is due; new deliveries are due at once
MIN_DEFER_SECONDS = 0.02
MAX_DEFER_SECONDS = 5.0
ERROR_PAUSE_SECONDS = 1.0


def make_sender(settings: Settings) -> WebhookSender:
    """The sender run_deliveries uses unless it is given one."""
    return WebhookSender(
        parse_networks(settings.webhook_allow_networks),
        require_https=settings.webhook_require_https,
        timeout=settings.webhook_timeout_seconds,
        max_connections=settings.webhook_concurrency,
        max_per_host=per_host_limit(settings),
    )


def per_host_limit(settings: Settings) -> int:
    return settings.webhook_max_per_host or max(1, settings.webhook_concurrency // 4)


async def run_deliveries(
    redis_async: AsyncRedis,
    settings: Settings,
    stop: asyncio.Event,
    *,
    shards: list[int] | None = None,
    sender: WebhookSender | None = None,
    commits: AsyncCommitter | None = None,
) -> None:
    """Deliver webhooks of the given shards (default: all) until stop is set, then finish what is in flight.

    redis_async is a redis.asyncio client (decoded responses) with a blocking pool, or one of at
    least REDIS_CALLS + 1 connections; it may be shared with other work. A given sender must
    already be entered (`async with`). Sends still running shutdown_grace_seconds after stop are
    cancelled; their leases expire and the reaper sends them again (at-least-once, same webhook-id).
    With ``commits`` (TASKQ_DURABILITY), claimed deliveries are sent once a commit confirms what they
    announce is durable: a webhook never tells of an outcome that a crash or a failover could undo.
    """
    async with AsyncExitStack() as stack:
        if sender is None:
            sender = await stack.enter_async_context(make_sender(settings))
        indexes = shards if shards is not None else list(range(settings.shards))
        loop = _DeliveryLoop(redis_async, settings, sender, [Shard(i) for i in indexes], commits)
        await loop.run(stop)


@lru_cache(maxsize=4096)
def _host(url: str) -> str:
    return urlsplit(url).netloc.lower()


def _context(item: Claimed) -> dict[str, Any]:
    """Log context of one delivery (``extra=``): ids only; never the url's query, body or headers."""
    return {"delivery_id": item.id, "task_id": item.task, "org": item.org, "attempt": item.attempt}


class _DeliveryLoop:
    def __init__(
        self,
        client: AsyncRedis,
        settings: Settings,
        sender: WebhookSender,
        shards: list[Shard],
        commits: AsyncCommitter | None = None,
    ) -> None:
        self.commits = commits
        # Records share round trips (each still its own fenced wh_record call), as task outcomes do.
        self.ops = AsyncScheduler(client)
        self.scripts = self.ops.scripts
        self.settings = settings
        self.sender = sender
        self.shards = shards
        self.capacity = settings.webhook_concurrency
        self.per_host = per_host_limit(settings)
        self.lease_ms = int(max(settings.webhook_lease_seconds, settings.webhook_timeout_seconds + 5) * 1000)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.host_sends: dict[str, dict[str, float]] = {}  # host -> delivery id -> when it started
        self.wake = asyncio.Event()  # a send finished, or stop was set

    async def run(self, stop: asyncio.Event) -> None:
        watcher = asyncio.create_task(self._forward(stop))
        next_reap = 0.0
        try:
            while not stop.is_set():
                reraise_cancellation()  # one a Redis call swallowed (see loops.pause)
                self.wake.clear()
                if time.monotonic() >= next_reap:
                    await self._reap()
                    next_reap = time.monotonic() + self.settings.reaper_interval_seconds
                try:
                    busy, wait = await self._claim_round()
                except Exception:  # Redis unreachable: keep the sends in flight, try again shortly
                    reraise_cancellation()
                    log.exception("claiming webhook deliveries failed")
                    busy, wait = False, ERROR_PAUSE_SECONDS
                if busy:
                    await asyncio.sleep(0)  # let the new sends start before claiming more
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait)
        finally:
            watcher.cancel()
            await self._drain()

    async def _forward(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.wake.set()

    async def _claim_round(self) -> tuple[bool, float]:
        """Claim from every shard while there is room; returns (claim again now, else seconds to wait)."""
        wait, busy = IDLE_SECONDS, False
        for shard in self.shards:
            room = self.capacity - len(self.in_flight)
            if room <= 0:
                return False, IDLE_SECONDS  # woken when a send finishes
            limit = min(self.settings.webhook_claim_batch, room)
            now = now_ms()
            items, next_due = await deliveries.claim(self.scripts, shard, now, now + self.lease_ms, limit)
            if items and self.commits is not None:
                # The claim is a write after the outcomes it announces: confirming it confirms them (if
                # this fails, the claims lapse and are sent later, once confirmed).
                await self.commits.confirm()
            for item in items:
                self._start(shard, item)
            if len(items) == limit:
                busy = True
            elif next_due is not None:
                wait = min(wait, max(0.0, (next_due - now_ms()) / 1000))
        return busy, wait

    def _start(self, shard: Shard, item: Claimed) -> None:
        host = _host(item.url)
        sends = self.host_sends.setdefault(host, {})
        if len(sends) >= self.per_host:
            # This receiver already has its share of sends in flight (it may hang): put the
            # delivery back for a while instead of holding a slot other receivers could use.
            later = now_ms() + int(self._defer_seconds(sends) * 1000)
            work = self._guarded(item, self._record(shard, item, "defer", later))
        else:
            sends[item.id] = time.monotonic()
            work = self._guarded(item, self._deliver(shard, item))
        task = asyncio.create_task(work)
        self.in_flight.add(task)
        task.add_done_callback(lambda t: self._done(t, host, item.id))

    def _done(self, task: asyncio.Task[None], host: str, delivery_id: str) -> None:
        self.in_flight.discard(task)
        sends = self.host_sends.get(host, {})
        sends.pop(delivery_id, None)
        if not sends:
            self.host_sends.pop(host, None)
        self.wake.set()

    async def _guarded(self, item: Claimed, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            reraise_cancellation()
            # Most likely Redis went away: the lease expires and the reaper sends it again.
            log.exception(
                "webhook delivery %s (attempt %d) not recorded", item.id, item.attempt, extra=_context(item)
            )

    async def _deliver(self, shard: Shard, item: Claimed) -> None:
        attempt = await self._send(item)
        decision, next_ms, outcome = self._decide(item, attempt)
        line = deliveries.log_line(
            now_ms(), item.attempt, attempt.status, attempt.error, attempt.duration_ms, outcome
        )
        await self._record(shard, item, decision, next_ms, line)
        if outcome == "delivered":
            if log.isEnabledFor(logging.DEBUG):
                log.debug("webhook delivery %s delivered", item.id, extra=_context(item))
            return
        # The host only: a url's path or query may carry the receiver's own token.
        level = logging.INFO if decision == "retry" else logging.WARNING
        log.log(
            level,
            "webhook delivery %s to %s: %s (%s)",
            item.id,
            _host(item.url),
            attempt.error,
            outcome,
            extra=_context(item),
        )

    async def _record(
        self, shard: Shard, item: Claimed, decision: Decision, next_ms: int, line: str = ""
    ) -> None:
        op = deliveries.record_op(
            shard,
            item,
            decision,
            now=now_ms(),
            next_ms=next_ms,
            line=line,
            retention_seconds=self.settings.retention_seconds,
        )
        await self.ops.run_batched(op)

    def _defer_seconds(self, sends: dict[str, float]) -> float:
        """About when a slot of this receiver frees up: the age of its oldest send, jittered and bounded.

        A fast receiver's deferred deliveries come back within milliseconds; a hanging one's back
        off as its sends age, so they do not spin through Redis.
        """
        oldest = min(sends.values())
        wait = min(time.monotonic() - oldest, self.settings.webhook_timeout_seconds, MAX_DEFER_SECONDS)
        return max(MIN_DEFER_SECONDS, wait * random.uniform(0.5, 1.0))

    async def _send(self, item: Claimed) -> Attempt:
        if item.body is None:
            error = "cannot send: the record the event is built from has expired"
            return Attempt(None, error, 0, None, "blocked")
        body = item.body.encode()
        try:
            secrets = signing.active_secrets(item.secrets_json, now_ms())
            headers = signing.headers(secrets, item.event, int(time.time()), body)
        except (ValueError, KeyError) as exc:
            return Attempt(
                None,
                f"cannot sign: the organization has no usable webhook secret ({exc})",
                0,
                None,
                "blocked",
            )
        return await self.sender.send(item.url, body, headers)

    def _decide(self, item: Claimed, attempt: Attempt) -> tuple[Decision, int, str]:
        """What the attempt means for the delivery: (decision, next attempt ms, log outcome)."""
        if attempt.outcome == "delivered":
            return "delivered", 0, "delivered"
        if attempt.outcome != "retry":
            return "failed", 0, attempt.outcome
        delay = next_delay(item.attempt, self.settings.webhook_schedule_seconds, attempt.retry_after)
        if delay is None:
            return "failed", 0, "exhausted"
        return "retry", now_ms() + int(delay * 1000), "retry"

    async def _reap(self) -> None:
        for shard in self.shards:
            try:
                returned = await deliveries.reap(self.scripts, shard, now_ms())
            except Exception:
                reraise_cancellation()
                log.exception("webhook lease reaper failed on shard %d", shard.index)
                continue
            if returned:
                log.warning(
                    "returned %d webhook deliveries whose sender stopped (shard %d)", returned, shard.index
                )

    async def _drain(self) -> None:
        if not self.in_flight:
            return
        _, pending = await asyncio.wait(set(self.in_flight), timeout=self.settings.shutdown_grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
