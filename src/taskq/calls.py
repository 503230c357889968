"""Synchronous calls through the queue, on the intake's event loop: admit one call as a task above every
async priority, wait for its outcome without polling, charge it once its answer is in hand, and cancel
it when its client leaves or its time is up.

A call is admitted by the same Lua script as a batch (admit.lua, flagged synchronous): it takes one
of the organization's concurrency slots (shared with its PROCESSING tasks) or is refused at once,
and reserves its credits like any task. Workers run it like any task; when it finishes, the
terminal transition pushes its id, status and result (or error) to the inbox of the intake process
that admitted it, ``T:inbox:<inbox id>``, in the same atomic step. Each process has one ``Calls``:
one reader task per shard blocks on the inbox list (BLPOP, then an LPOP of the rest) for all the
calls the process waits for, charges the completed ones (collect.lua, one script call per batch
popped) and resolves their futures. A waiting call costs a future and nothing else. Admissions and
charges go through an ``AsyncScheduler``: those submitted while a round trip is under way leave
together in the next pipeline, each still its own script call with its own verdict.

A completed call is charged only once its answer has reached the process that answers its client:
if that process is gone (crash, kill) or the call's client left first, nobody collects it and the
reaper refunds it SYNC_COLLECT_MS (30 s) after it completed (reap.lua).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from taskq.admission import provider_errors
from taskq.asyncops import BATCH_LIMIT, AsyncScheduler
from taskq.errors import (
    CallFailed,
    ConcurrencyLimitExceeded,
    InsufficientCredits,
    RequestCanceled,
    TaskqError,
    Unauthorized,
)
from taskq.keys import Shard
from taskq.pricing import credits_for
from taskq.redistypes import AsyncRedis
from taskq.scheduler import SYNC_PRIORITY, cancel_op, timeout_message
from taskq.schemas.tasks import TERMINAL, FieldError, TaskRequest
from taskq.scripts import Op
from taskq.settings import Settings
from taskq.store import Org, now_ms, queue_key_lookup

log = logging.getLogger(__name__)

#: What ``Calls._wait`` returns when the client went away.
GONE = "GONE"

#: Call ids (and request ids) come from a generator seeded once per process (again after a fork):
#: reading the system's randomness is a system call, which on some machines costs more than a
#: call's whole admission. These ids are never secrets: unique is enough.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def quick_uuid() -> str:
    """A random (version 4) UUID without a system call."""
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


@dataclass(frozen=True, slots=True)
class Slots:
    """The organization's concurrency as the call saw it: limit and slots in use (this call included)."""

    limit: int
    current: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.current)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished call: its status (COMPLETED, FAILED, CANCELED) and its result or error (JSON text)."""

    status: str
    body: str

    @classmethod
    def parse(cls, reply: str) -> Outcome:
        status, _, body = reply.partition("\n")
        return cls(status, body)


@dataclass(frozen=True, slots=True)
class Admitted:
    task_id: str
    cost: int
    slots: Slots
    credits_left: int  # the balance less every reservation, this call's included, at admission


@dataclass(frozen=True, slots=True)
class Refused:
    """A call refused after validation (no concurrency slot, no credits): it still reports the slots."""

    error: TaskqError
    slots: Slots


class Waiter:
    """One admitted call this process waits for: its outcome arrives on ``future``."""

    __slots__ = ("collecting", "future", "shard", "task_id")

    def __init__(self, task_id: str, shard: Shard, future: asyncio.Future[Outcome]) -> None:
        self.task_id = task_id
        self.shard = shard
        self.future = future
        self.collecting = False  # its outcome is popped and being charged: it will be handed over


def check(task: TaskRequest, settings: Settings) -> list[FieldError]:
    """The checks that need settings: the task type's provider is configured here."""
    return provider_errors(task, settings)


def price(task: TaskRequest, settings: Settings) -> int:
    """A synchronous call costs the async price plus the surcharge (cloro-api.md §9)."""
    return credits_for(task, settings.price(task.task_type) + settings.sync_surcharge)


def admit_op(org: Org, task: TaskRequest, task_id: str, cost: int, inbox: str, settings: Settings) -> Op[Any]:
    """admit.lua for one call: one task in lane SYNC_PRIORITY, flagged synchronous, answered to `inbox`."""
    shard = org.shard
    packed = [[task_id, task.task_type, SYNC_PRIORITY, cost, "", "", 0, 1, 0, inbox]]
    payload = task.payload.__pydantic_serializer__.to_json(task.payload)
    return Op(
        "admit",
        [shard.org(org.id), shard.seq, shard.rr, shard.turn, shard.capped, shard.wake, shard.delayed],
        [shard.tag, org.id, now_ms(), orjson.dumps(packed), "", 1, "", settings.batch_ttl_seconds, payload],
        lambda reply: reply,
    )


def collect_op(shard: Shard, task_ids: list[str]) -> Op[list[int]]:
    """collect.lua: charge these completed calls (1 each when charged now, 0 when refunded already)."""
    return Op("collect", [shard.collect], [shard.tag, *task_ids], lambda reply: [int(x) for x in reply])


def verdict(reply: Any, task_id: str, cost: int) -> Admitted | Refused:
    """admit.lua's reply for one call as Admitted, or Refused with the reason and the slots."""
    if reply[0] == "no_org":
        raise Unauthorized("organization record is missing")
    if reply[0] == "concurrency":
        slots = Slots(int(reply[1]), int(reply[2]))
        error = ConcurrencyLimitExceeded(
            f"Concurrency limit exceeded: {slots.limit} concurrent requests allowed",
            {"limit": slots.limit, "current": slots.current},
        )
        return Refused(error, slots)
    slots = Slots(int(reply[2]), int(reply[3]))
    if reply[1] == "credits":
        return Refused(InsufficientCredits("Insufficient credits", {"creditsToCharge": cost}), slots)
    return Admitted(task_id, cost, slots, int(reply[4]))


class Lookups:
    """The API key lookups (and rate counts) of the requests of a moment, sent together: one arriving
    while a round trip is under way waits for the next, which carries every one queued meanwhile
    (as ``AsyncScheduler.run_batched`` does for script calls). Each gets its own replies.

    The requests of one round trip that share a key and a rate window share its commands: one GET, one
    INCRBY of their number and one EXPIRE, rather than three commands each (a burst is mostly one key).
    Each still gets its own count, the one its own INCR would have given: the window's total less
    those after it in the trip."""

    def __init__(self, client: AsyncRedis) -> None:
        self.client = client
        self._queued: list[tuple[str, str, asyncio.Future[list[Any]]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def replies(self, digest: str, count_key: str) -> list[Any]:
        """The replies of ``store.queue_key_lookup`` for this digest and rate window (the key record and
        this request's count), read by ``Store.key_found``."""
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queued.append((digest, count_key, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        return await done

    async def _send(self) -> None:
        while self._queued:
            batch, self._queued = self._queued[:BATCH_LIMIT], self._queued[BATCH_LIMIT:]
            groups: dict[tuple[str, str], list[asyncio.Future[list[Any]]]] = {}
            for digest, count_key, done in batch:
                groups.setdefault((digest, count_key), []).append(done)
            pipe = self.client.pipeline(transaction=False)
            for (digest, count_key), waiting in groups.items():
                queue_key_lookup(pipe, digest, count_key, len(waiting))
            try:
                replies = await pipe.execute()
            except Exception as exc:  # Redis unreachable or similar: every caller hears of it
                for *_, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for at, waiting in enumerate(groups.values()):
                record, total = replies[3 * at], int(replies[3 * at + 1])  # GET, INCRBY (EXPIRE)
                for position, done in enumerate(waiting):
                    if not done.done():
                        done.set_result([record, total - len(waiting) + 1 + position])


class Calls:
    """The synchronous calls of one intake process (one event loop, one asyncio Redis client)."""

    def __init__(self, client: AsyncRedis, settings: Settings) -> None:
        self.id = quick_uuid()  # this process's inbox
        self.client = client
        self.settings = settings
        self.scheduler = AsyncScheduler(client)
        self.lookups = Lookups(client)
        self._waiters: dict[str, Waiter] = {}
        self._per_shard: Counter[int] = Counter()  # waiters per shard index
        self._readers: dict[int, asyncio.Task[None]] = {}  # shard index -> its inbox reader

    async def admit(self, org: Org, task: TaskRequest) -> Admitted | Refused:
        """Admit one call, or say why not (ConcurrencyLimitExceeded, InsufficientCredits) with the slots.
        Its waiter is registered first: the answer may come before the admission's reply."""
        task_id = quick_uuid()
        cost = price(task, self.settings)
        self._expect(task_id, org.shard)
        try:
            reply = await self.scheduler.run_batched(
                admit_op(org, task, task_id, cost, self.id, self.settings)
            )
            admitted = verdict(reply, task_id, cost)
        except BaseException:
            self._forget(task_id)
            raise
        if isinstance(admitted, Refused):
            self._forget(task_id)
        return admitted

    async def outcome(self, org: Org, task_id: str, hangup: asyncio.Future[Any] | None) -> Outcome:
        """The admitted call's Outcome once it finishes. Raises RequestCanceled when `hangup` resolves
        first (the client left) and CallFailed when TASKQ_SYNC_TIMEOUT_SECONDS pass: the call is then
        canceled (QUEUED at once, PROCESSING at its next safe point) and not charged. Afterwards the
        call is forgotten here: an outcome that comes later is not handed over, nor charged (the
        reaper refunds it)."""
        timeout = self.settings.sync_timeout_seconds
        try:
            done = await self._wait(task_id, timeout, hangup)
            if done == GONE:
                await self.abandon(org, task_id)
                raise RequestCanceled("Request was canceled by client")
            if done is None:
                if await self.abandon(org, task_id) not in TERMINAL:  # canceled: never charged
                    raise CallFailed(timeout_message(timeout))
                done = await self._wait(task_id, 1.0, None)  # it finished just now: its reply is there
            if not isinstance(done, Outcome):
                raise CallFailed("Internal server error")
            return done
        except TaskqError:
            raise
        except BaseException:  # the intake is failing or stopping: the call must not run unanswered
            await asyncio.shield(self._abandon_quietly(org, task_id))
            raise
        finally:
            self._forget(task_id)

    async def _wait(
        self, task_id: str, timeout: float, hangup: asyncio.Future[Any] | None
    ) -> Outcome | str | None:
        """The call's Outcome, GONE when `hangup` resolves first, None after `timeout` seconds."""
        waiter = self._waiters[task_id]
        waits: set[asyncio.Future[Any]] = {waiter.future} if hangup is None else {waiter.future, hangup}
        await asyncio.wait(waits, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
        if not waiter.future.done() and waiter.collecting:
            await waiter.future  # charged as it is handed over: answered, even to a client gone
        if waiter.future.done():
            return waiter.future.result()
        return GONE if hangup is not None and hangup.done() else None

    async def _abandon_quietly(self, org: Org, task_id: str) -> None:
        try:
            await self.abandon(org, task_id)
        except Exception:
            log.warning("could not cancel synchronous call %s", task_id)

    async def abandon(self, org: Org, task_id: str) -> str:
        """Cancel a call whose client left or whose time is up: QUEUED at once, PROCESSING at its next
        safe point (its completion included: it is not charged). Returns cancel.lua's verdict."""
        op = cancel_op(org, task_id, now=now_ms(), retention=self.settings.retention_seconds)
        return await self.scheduler.run(op)

    async def aclose(self) -> None:
        """Stop the inbox readers (the process is stopping)."""
        readers = list(self._readers.values())
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    # The inbox -----------------------------------------------------------------------------------
    def _expect(self, task_id: str, shard: Shard) -> None:
        self._waiters[task_id] = Waiter(task_id, shard, asyncio.get_running_loop().create_future())
        self._per_shard[shard.index] += 1
        if shard.index not in self._readers:
            self._readers[shard.index] = asyncio.create_task(self._read(shard))

    def _forget(self, task_id: str) -> None:
        waiter = self._waiters.pop(task_id, None)
        if waiter is not None:
            self._per_shard[waiter.shard.index] -= 1

    async def _read(self, shard: Shard) -> None:
        """Pop outcomes while this shard has waiters; each round is one round trip (a BLPOP and an LPOP
        of whatever else came, pipelined), then the charges of the completed calls popped."""
        key = shard.inbox(self.id)
        failing = False
        try:
            while self._per_shard[shard.index] > 0:
                try:
                    pipe = self.client.pipeline(transaction=False)
                    pipe.execute_command("BLPOP", key, 1)
                    pipe.execute_command("LPOP", key, 1000)
                    popped, more = await pipe.execute()
                except RedisError as exc:
                    if not failing:  # once per outage
                        log.warning("reading the synchronous calls' inbox %s failed (%s); retrying", key, exc)
                    failing = True
                    await asyncio.sleep(0.5)
                    continue
                failing = False
                if popped is not None:
                    await self._hand_over(shard, [popped[1], *(more or [])])
        finally:
            del self._readers[shard.index]

    async def _hand_over(self, shard: Shard, items: list[str]) -> None:
        """Charge the completed calls someone here still waits for, then resolve their futures. The
        other outcomes are dropped: a completed one is then not charged (the reaper refunds it)."""
        found: list[tuple[Waiter, Outcome]] = []
        for item in items:
            task_id, _, reply = item.partition("\n")
            waiter = self._waiters.get(task_id)
            if waiter is not None and not waiter.future.done():
                waiter.collecting = True
                found.append((waiter, Outcome.parse(reply)))
        completed = [waiter.task_id for waiter, outcome in found if outcome.status == "COMPLETED"]
        if completed:
            try:
                await self.scheduler.run_batched(collect_op(shard, completed))
            except RedisError as exc:  # not charged: the reaper refunds them
                log.warning("charging %d synchronous calls failed: %s", len(completed), exc)
        for waiter, outcome in found:
            if not waiter.future.done():
                waiter.future.set_result(outcome)
