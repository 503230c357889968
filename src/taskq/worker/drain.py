"""The drain: one asyncio loop keeping up to K provider calls in flight, claiming as slots free up.

A drain claims in small batches while it has free slots, sleeps on the wake list when the queue is
empty, renews its leases and reaps expired ones in the background, and stops claiming when asked
(signal) or after its time is up. It then lets in-flight calls finish within a grace period and
releases the rest unharmed. RQ hosts drains through ``taskq.worker.hosting.run``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskq import flow, keys
from taskq.asyncops import AsyncScheduler
from taskq.durability import AsyncCommitter, Policy
from taskq.errors import Unconfirmed
from taskq.keys import Shard
from taskq.providers import ProviderConfig
from taskq.scheduler import MUST_FAIL, SYNC_PRIORITY, Claimed, Refusal, claim, release
from taskq.scripts import Op
from taskq.settings import Settings
from taskq.store import now_ms
from taskq.worker.clients import redis_client, steady_gc
from taskq.worker.debug import DUMP_SIGNAL, dump_tasks
from taskq.worker.execute import context, execute
from taskq.worker.http import http_client
from taskq.worker.learning import Learner
from taskq.worker.leases import Leases, reap_forever
from taskq.worker.loops import first_done, pause, reraise_cancellation, stop_tasks
from taskq.worker.schedules import run_schedules
from taskq.worker.upstreams import provider_configs
from taskq.worker.webhook_loop import run_deliveries

log = logging.getLogger("taskq.worker")

#: Most claim calls (of claim_batch tasks each) sent to one shard in one round trip.
CLAIMS_PER_TRIP = 8

#: An outcome's round trip waits up to this long for others to join it (not a synchronous call's).
#: Slow calls end one at a time: an ack call and a claim call per task cost Redis and the drain several
#: times what one call for many does. Outcomes sent together also free their slots together, so the
#: claims that refill them come in batches too (a wait before claiming gained nothing more, and cost
#: rate).
OUTCOME_LINGER_SECONDS = 0.01

#: A drain that claimed all it asked passes a wake-up on to idle drains at most this often per shard.
WAKE_PASS_SECONDS = 0.1

#: Longest pause between claim attempts while Redis is unreachable (backoff from 0.25 s).
REDIS_BACKOFF_MAX_SECONDS = 5.0

#: How long a drain waits for its background loops to end once cancelled (they end at once normally).
UPKEEP_STOP_SECONDS = 5.0

#: How often a drain writes its heartbeat in keys.WORKERS (the dashboard calls it stale after 30 s).
HEARTBEAT_SECONDS = 5.0

#: A drain logs a key's rate-limit pauses at most this often (quota and refused keys: every time).
REFUSAL_LOG_SECONDS = 10.0

#: Signals that ask a drain to stop claiming and wind down (SIGUSR1: forwarded by the RQ worker).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Drain:
    def __init__(
        self,
        settings: Settings,
        ops: AsyncScheduler,
        http: httpx.AsyncClient,
        configs: dict[str, ProviderConfig],
        *,
        concurrency: int,
        stop: asyncio.Event,
        rq_worker: str | None = None,
        commits: AsyncCommitter | None = None,
    ) -> None:
        self.settings, self.ops, self.http, self.configs = settings, ops, http, configs
        self.commits = commits  # TASKQ_DURABILITY: an outcome counts once it is durable
        self.concurrency = concurrency
        self.stop = stop
        self.leases = Leases(ops, settings)
        self.shards = [Shard(i) for i in range(settings.shards)]
        self.caps = {ttype: settings.provider_caps.get(ttype) for ttype in configs}
        self.lanes = flow.lanes(settings, configs) if settings.flow_control else {}
        self.flow_spec = flow.spec(settings, self.lanes) if self.lanes else ""
        self._reopens: float | None = None  # seconds until a paced lane with queued tasks reopens
        self.learner = Learner(self.lanes, settings.shards) if self.lanes else None
        self._logged: dict[tuple[str, str], float] = {}  # (type, key) -> last rate-limit log (monotonic)
        self.slot_freed = asyncio.Event()
        self._woke: dict[int, float] = {}  # shard -> when this drain last passed a wake-up on (monotonic)
        self.rng = random.Random()
        self.stats: Counter[str] = Counter()
        self._round = 0  # claim rounds so far: each starts at the next shard
        self._trip = 1  # claim calls per round trip: doubles while they come back full, else 1
        self.parent_pid: int | None = None  # the hosting RQ worker, while run() runs under one
        self._cluster = isinstance(ops.client, RedisCluster)
        self.host, self.pid, self.rq_worker = socket.gethostname(), os.getpid(), rq_worker
        self.name = f"{self.host}/{self.pid}/{uuid.uuid4().hex[:6]}"  # several drains may share a pid

    async def run(self, seconds: float, parent_pid: int | None = None) -> dict[str, int]:
        """Drain for up to `seconds` (or until stopped); return counts of what happened."""

        self.parent_pid = parent_pid
        upkeep = [
            asyncio.create_task(self.leases.renew_forever(self._check_parent)),
            asyncio.create_task(reap_forever(self.ops, self.shards, self.settings)),
            asyncio.create_task(self._beat_forever()),
        ]
        if self.settings.worker_run_schedules:
            upkeep.append(asyncio.create_task(run_schedules(self.ops.client, self.settings, self.stop)))
        webhooks_stop = asyncio.Event()
        first_webhooks = len(upkeep)
        if self.settings.worker_deliver_webhooks:
            # Same loop, same process: completions and their webhooks scale together (anchors §4.4).
            deliver = run_deliveries(self.ops.client, self.settings, webhooks_stop, commits=self.commits)
            upkeep.append(asyncio.create_task(deliver))
        try:
            await self._claim_loop(time.monotonic() + seconds)
            await self._wind_down()
            webhooks_stop.set()
            if upkeep[first_webhooks:]:
                await asyncio.wait(upkeep[first_webhooks:], timeout=self.settings.shutdown_grace_seconds + 1)
        finally:
            stuck = await stop_tasks(upkeep, UPKEEP_STOP_SECONDS)
            if stuck:
                log.error("%d background loops did not stop; the drain ends without them", len(stuck))
            try:
                await self.ops.client.hdel(keys.WORKERS, self.name)
            except Exception:  # Redis gone: the dashboard ages the entry out
                log.warning("could not remove the heartbeat of %s", self.name, extra={"worker": self.name})
        return dict(self.stats)

    def heartbeat(self) -> dict[str, Any]:
        """What this drain shows on the dashboard (api/ops.py reads it from keys.WORKERS)."""
        return {
            "host": self.host,
            "pid": self.pid,
            "rqWorker": self.rq_worker,
            "inflight": len(self.leases.held),
            "claimed": self.stats["claimed"],
            "completed": self.stats["ack"],
            "failed": self.stats["fail"],
            "retried": self.stats["retry"],
            "heartbeat": now_ms(),
        }

    async def _beat_forever(self) -> None:
        interval = min(HEARTBEAT_SECONDS, self.settings.lease_seconds / 3)
        while True:
            try:
                await self.ops.client.hset(keys.WORKERS, self.name, json.dumps(self.heartbeat()))
                lanes = flow.announcement(self.lanes, now_ms())
                for shard in self.shards if lanes else []:
                    await self.ops.client.hset(shard.flow, mapping=lanes)
            except Exception:
                reraise_cancellation()
                log.warning("could not write the heartbeat of %s", self.name, extra={"worker": self.name})
            await pause(interval)

    def _check_parent(self) -> None:
        """A drain whose RQ worker is gone (killed with its pool) stops claiming; what it holds runs
        on and is recorded, or goes back to the queue at shutdown."""
        if self.parent_pid is not None and os.getppid() != self.parent_pid and not self.stop.is_set():
            log.warning("RQ worker %s is gone; this drain stops claiming", self.parent_pid)
            self.stop.set()

    async def _claim_loop(self, deadline: float) -> None:
        failures = 0  # claims in a row that Redis did not answer
        while not self.stop.is_set() and time.monotonic() < deadline:
            reraise_cancellation()  # one a Redis call swallowed (see loops.pause)
            self._check_parent()  # before every claim, not only at lease renewals
            if self.stop.is_set():
                break
            free = self.concurrency - len(self.leases.held)
            if free <= 0:
                self.slot_freed.clear()
                await first_done(self.slot_freed.wait(), self.stop.wait())
                continue
            try:
                more = await self._claim(free)
            except RedisError as exc:
                # Redis restarting, failing over or unreachable: the drain keeps its calls and waits.
                failures += 1
                if failures == 1 or failures % 20 == 0:  # about every minute and a half while it lasts
                    log.warning("claiming failed %d time(s) in a row (%s); retrying with backoff while %d "
                                "calls run", failures, exc, len(self.leases.held))  # fmt: skip
                delay = min(REDIS_BACKOFF_MAX_SECONDS, 0.25 * 2 ** min(failures - 1, 5))
                await first_done(asyncio.sleep(delay * self.rng.uniform(0.5, 1.0)), self.stop.wait())
                continue
            if failures:
                log.warning("claiming works again after %d failed attempts", failures)
                failures = 0
            if not more:  # the queue gave less than asked: wait for a wake-up rather than ask again
                await self._idle()

    async def _claim(self, free: int) -> bool:
        """Claim calls per shard until the slots are full; return whether some shard gave all it was
        asked (likely more queued: claim again at once).

        Each round starts one shard further on, so every shard gets the first pick in turn and none
        starves. Priority is strict within a shard (an org's tasks all live in one), not across shards:
        another shard's lower-priority tasks may start a round earlier.
        """
        started, more = 0, False
        self._reopens = None
        first = self._round % len(self.shards)
        self._round += 1
        batch = self.settings.claim_batch
        for shard in self.shards[first:] + self.shards[:first]:
            want = min(free - started, batch * self._trip)
            if want <= 0:
                break
            lease_ms = int(self.settings.lease_seconds * 1000)
            # Many free slots and a full queue (a wave of calls just ended): several small claims in
            # one round trip, so refilling keeps pace with a busy loop while each claim script stays
            # short on the server. A queue that gave less than asked gets one call a trip again: a
            # claim that finds nothing still reads the ready indexes.
            ops = [claim(shard, self.caps, now=now_ms(), lease_ms=lease_ms, k=min(batch, want - i),
                         flow=self.flow_spec) for i in range(0, want, batch)]  # fmt: skip
            replies = await self.ops.run_many(ops)
            tasks = [task for claimed in replies for task in claimed]
            for claimed in replies:
                if claimed.reopens_ms is not None:
                    wait = claimed.reopens_ms / 1000
                    self._reopens = wait if self._reopens is None else min(self._reopens, wait)
            for task in tasks:
                self.leases.held[task.id] = (task, asyncio.create_task(self._run(task)))
            started += len(tasks)
            if len(tasks) == want:
                more = True
                self._trip = min(CLAIMS_PER_TRIP, self._trip * 2)
                # Likely more queued: pass the wake-up on so another idle worker joins in (capped like
                # admission's, so tokens nobody needed do not pile up and make idle drains spin), now
                # and then rather than after every claim of a few freed slots.
                if time.monotonic() - self._woke.get(shard.index, -WAKE_PASS_SECONDS) >= WAKE_PASS_SECONDS:
                    self._woke[shard.index] = time.monotonic()
                    pipe = self.ops.client.pipeline(transaction=False)
                    pipe.lpush(shard.wake, "more").ltrim(shard.wake, 0, 63)
                    await pipe.execute()
            else:
                self._trip = 1
        self.stats["claimed"] += started
        return more

    async def _idle(self) -> None:
        """Block on the wake lists (admission pushes one per batch) until work arrives, a waiting task
        (delayed, or a retry) comes due, or a timeout; or, when a paced lane holding back queued tasks
        reopens sooner, sleep until then."""
        wait = self.settings.worker_idle_wait_seconds
        due_in = await self._next_due_in()
        if due_in is not None and due_in <= 0:
            return
        if self._reopens is not None and self._reopens < wait:
            nap = self._reopens if due_in is None else min(self._reopens, due_in)
            await first_done(asyncio.sleep(nap), self.stop.wait())
            return
        if self._cluster:
            # The wake lists live in different slots: one BLPOP per shard, the first token wins.
            waits = [self.ops.client.blpop([shard.wake], timeout=wait) for shard in self.shards]
        else:
            waits = [self.ops.client.blpop([shard.wake for shard in self.shards], timeout=wait)]
        # Redis times a BLPOP out at its own clock tick (up to 100 ms late): a due task wakes the drain
        # by a timer of its own instead.
        timer = [asyncio.sleep(due_in)] if due_in is not None and due_in < wait else []
        await first_done(*waits, *timer, self.stop.wait())

    async def _next_due_in(self) -> float | None:
        """Seconds until the earliest waiting task of any shard comes due, or None when none waits."""
        if self._cluster:
            heads = await asyncio.gather(*(self.ops.client.zrange(s.delayed, 0, 0, withscores=True)
                                           for s in self.shards))  # fmt: skip
        else:
            pipe = self.ops.client.pipeline(transaction=False)
            for shard in self.shards:
                pipe.zrange(shard.delayed, 0, 0, withscores=True)
            heads = await pipe.execute()
        due = [math.ceil(head[0][1]) for head in heads if head]  # a delayed task's score has a fraction
        return (min(due) - now_ms()) / 1000 if due else None

    async def _run(self, task: Claimed) -> None:
        try:
            outcome = await execute(task, self.http, self.configs, self.settings, self.rng, self.lanes)
            if self.learner is not None and (outcome.observed is not None or task.reserved):
                self.learner.learn(self.ops, task, outcome.observed)  # flow control: what the responses said
            op = outcome.op
            # From here the lease may vanish because this very outcome applied: renewals leave it be.
            self.leases.settling.add(task.id)
            linger = OUTCOME_LINGER_SECONDS if task.priority != SYNC_PRIORITY else 0.0
            applied = await self._apply(op, linger)
            if applied == MUST_FAIL and outcome.fallback is not None:
                op = outcome.fallback
                applied = await self._apply(op, linger)
            if applied:
                self.stats[op.script] += 1
                if op.script == "throttle" and outcome.refusal is not None:
                    self._log_refusal(task, outcome.refusal)
                else:
                    self._log_outcome(task, op.script, outcome.code, outcome.message)
                if task.probe and op.script == "ack":
                    await self._recovered(task)
            else:
                self.stats["fenced"] += 1
                log.warning("task %s was no longer ours when it finished (lease lost)", task.id,
                            extra=context(task))  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception:
            # Redis unreachable or similar: the lease lapses and the reaper requeues the task.
            self.stats["errors"] += 1
            log.exception("could not record the outcome of task %s", task.id, extra=context(task))
        finally:
            self.leases.settling.discard(task.id)
            self.leases.held.pop(task.id, None)
            self.slot_freed.set()

    async def _apply(self, op: Op[Any], linger: float = 0.0) -> Any:
        """Apply a task's outcome (sharing a round trip with others); False if its lease was lost.

        While Redis does not answer, the outcome is sent again with backoff until the lease would have
        lapsed anyway, so a short Redis outage does not cost the provider call. Sending it twice is
        safe: the transition is fenced by the lease token, so a second copy finds it applied and does
        nothing. With TASKQ_DURABILITY the outcome is sent again in the same way until a commit confirms
        it durable: a failover that lost it (with the new primary still holding the lease) gets it again.
        """
        give_up = time.monotonic() + self.settings.lease_seconds
        delay = 0.25
        applied = False  # a copy that lands after an applied one is fenced out: the first one counts
        while True:
            try:
                applied = await self.ops.run_batched(op, linger=linger) or applied
                if self.commits is not None:
                    await self.commits.confirm()
                return applied
            except (RedisConnectionError, RedisTimeoutError, Unconfirmed):
                if time.monotonic() + delay > give_up:
                    raise
            await pause(delay * self.rng.uniform(0.5, 1.0))
            delay = min(delay * 2, REDIS_BACKOFF_MAX_SECONDS)

    async def _recovered(self, task: Claimed) -> None:
        """A quota probe succeeded: the key runs again on every worker."""
        for shard in self.shards:
            await self.ops.client.hdel(shard.flow, *flow.recovered(task.task_type, task.key))
        log.warning("%s key %s: quota probe succeeded; the key runs again", task.task_type, task.key,
                    extra=context(task))  # fmt: skip

    def _log_refusal(self, task: Claimed, refusal: Refusal) -> None:
        """Quota and refused keys are logged loudly every time; rate-limit pauses now and then."""
        lane = f"{task.task_type} key {task.key}"
        if refusal.kind == "quota":
            log.error("PROVIDER QUOTA EXHAUSTED: %s stops (tasks stay queued; probe every %g s, or "
                      "`taskq lane resume %s`): %s", lane, self.settings.quota_probe_seconds, task.task_type,
                      refusal.message, extra=context(task))  # fmt: skip
        elif refusal.kind == "auth":
            log.error("PROVIDER KEY REFUSED: %s leaves the pool; the other keys carry on: %s", lane,
                      refusal.message, extra=context(task))  # fmt: skip
        else:
            last = self._logged.get((task.task_type, task.key), 0.0)
            if time.monotonic() - last >= REFUSAL_LOG_SECONDS:
                self._logged[(task.task_type, task.key)] = time.monotonic()
                wait = "" if refusal.wait is None else f" for {refusal.wait:g} s"
                log.warning("%s rate limited: paused%s, task back in line: %s", lane, wait, refusal.message,
                            extra=context(task))  # fmt: skip

    def _log_outcome(self, task: Claimed, script: str, code: str | None, message: str | None) -> None:
        """Completions at DEBUG (a busy drain finishes thousands a second); retries INFO, failures WARNING."""
        if script == "ack":
            if log.isEnabledFor(logging.DEBUG):
                log.debug("task %s completed", task.id, extra=context(task))
        elif script == "retry":
            log.info("task %s will be retried after %s: %s", task.id, code, message, extra=context(task))
        else:
            log.warning("task %s failed with %s: %s", task.id, code, message, extra=context(task))

    async def _wind_down(self) -> None:
        """Let in-flight calls finish (grace if stopped, else the provider timeout); release the rest."""
        start = time.monotonic()
        while self.leases.held:
            limit = self.settings.shutdown_grace_seconds
            if not self.stop.is_set():
                limit = max(limit, self.settings.longest_provider_timeout())
            left = start + limit - time.monotonic()
            if left <= 0:
                break
            pending = [entry[1] for entry in self.leases.held.values()]
            await asyncio.wait([*pending, asyncio.ensure_future(self.stop.wait())], timeout=min(left, 1.0),
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        leftovers = list(self.leases.held.values())
        for _, running in leftovers:
            running.cancel()
        await asyncio.gather(*(running for _, running in leftovers), return_exceptions=True)
        for task, _ in leftovers:
            if await self.ops.run(release(task, now=now_ms(), retention=self.settings.retention_seconds)):
                self.stats["released"] += 1


async def drain(
    settings: Settings,
    *,
    concurrency: int,
    seconds: float,
    parent_pid: int | None = None,
    stop: asyncio.Event | None = None,
    rq_worker: str | None = None,
    stopped_early: Callable[[], bool] = lambda: False,
) -> dict[str, int]:
    """Run one drain with its own clients; SIGTERM, SIGINT and SIGUSR1 (or `stop`) start the wind-down.

    ``stopped_early`` says whether a stop signal arrived before this loop listened (RQ hosting)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(DUMP_SIGNAL, dump_tasks)
    if stopped_early():
        stop.set()
    client = redis_client(settings)
    http = http_client(concurrency, settings.worker_http_transport)
    try:
        if isinstance(client, RedisCluster):
            # Learn the slot map before the first burst of concurrent commands: redis-py 8.1's asyncio
            # cluster client initializing under concurrent first commands closes connections in use.
            await client.initialize()
        policy = Policy.of(settings)
        commits = AsyncCommitter(client, policy) if policy is not None else None
        worker = Drain(settings, AsyncScheduler(client), http, provider_configs(settings),
                       concurrency=concurrency, stop=stop, rq_worker=rq_worker, commits=commits)  # fmt: skip
        with steady_gc():  # hundreds of calls in flight: collect less often, skip startup objects
            stats = await worker.run(seconds, parent_pid)
    finally:
        await http.aclose()
        await client.aclose()
        for sig in (*STOP_SIGNALS, DUMP_SIGNAL):
            loop.remove_signal_handler(sig)
    log.info("drain finished: %s", stats)
    return stats
