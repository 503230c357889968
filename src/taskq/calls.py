"""Synchronous calls through the queue: admit one call as a task above every async priority, wait for
its outcome without polling, and cancel it when its client leaves or its time is up.

A call is admitted by the same Lua script as a batch (admit.lua, flagged synchronous): it takes one
of the organization's concurrency slots (shared with its PROCESSING tasks) or is refused at once,
and reserves its credits like any task. Workers run it like any task; when it finishes, the
terminal transition pushes its status and result (or error) to ``T:reply:<id>`` in the same atomic
step, and the intake, blocked on that list (BLPOP), wakes up with the answer.
"""

from __future__ import annotations

import os
import random
import select
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from taskq.admission import provider_errors
from taskq.errors import ConcurrencyLimitExceeded, InsufficientCredits, TaskqError, Unauthorized
from taskq.pricing import credits_for
from taskq.redistypes import Redis, plain_client
from taskq.scheduler import SYNC_PRIORITY, cancel
from taskq.schemas.tasks import FieldError, TaskRequest
from taskq.settings import Settings
from taskq.store import Org, Store, now_ms

#: What ``wait`` returns when the client went away.
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished call: its status (COMPLETED, FAILED, CANCELED) and its result or error (JSON text)."""

    status: str
    body: str

    @classmethod
    def parse(cls, reply: str) -> Outcome:
        status, _, body = reply.partition("\n")
        return cls(status, body)


def check(task: TaskRequest, settings: Settings) -> list[FieldError]:
    """The checks that need settings: the task type's provider is configured here."""
    return provider_errors(task, settings)


def price(task: TaskRequest, settings: Settings) -> int:
    """A synchronous call costs the async price plus the surcharge (cloro-api.md §9)."""
    return credits_for(task, settings.price(task.task_type) + settings.sync_surcharge)


def admit(store: Store, settings: Settings, org: Org, task: TaskRequest) -> Admitted | Refused:
    """Admit one call, or say why not (ConcurrencyLimitExceeded, InsufficientCredits) with the slots."""
    shard = org.shard
    task_id = quick_uuid()
    cost = price(task, settings)
    packed = [[task_id, task.task_type, SYNC_PRIORITY, cost, "", "", 0, 1]]
    payload = task.payload.__pydantic_serializer__.to_json(task.payload)
    reply = store.scripts["admit"](
        keys=[shard.org(org.id), shard.seq, shard.rr, shard.turn, shard.capped, shard.wake, shard.delayed],
        args=[
            shard.tag,
            org.id,
            now_ms(),
            orjson.dumps(packed),
            "",
            1,
            "",
            settings.batch_ttl_seconds,
            payload,
        ],
    )
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


def wait(
    store: Store, org: Org, task_id: str, timeout: float, watch: socket.socket | None
) -> Outcome | str | None:
    """Block until the call finishes (its Outcome), its client closes `watch` (GONE), or `timeout`
    seconds pass (None). One BLPOP on the call's reply list; no polling."""
    key = org.shard.reply(task_id)
    plain = plain_client(store.client)
    if plain is None:  # cluster, fake, single-connection
        return _wait_in_steps(store.client, key, timeout, watch)
    pool = plain.connection_pool
    conn: Any = pool.get_connection()
    try:
        conn.send_command("BLPOP", key, max(0.01, round(timeout, 3)))
        sock = conn._sock
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if watch is not None:
            poller.register(watch, select.POLLIN)
        # The BLPOP answers by itself at its timeout; past that (and a margin) Redis is not answering.
        limit = time.monotonic() + timeout + 5.0
        while True:
            events = poller.poll(max(0.0, limit - time.monotonic()) * 1000)
            if not events:
                raise redis.TimeoutError("Redis did not answer a BLPOP in time")
            if any(fd == sock.fileno() for fd, _ in events):
                popped = conn.read_response()
                return Outcome.parse(str(popped[1])) if popped else None
            assert watch is not None
            if _closed(watch):
                conn.disconnect()  # the BLPOP is still pending on it: never reuse this connection
                return GONE
            poller.unregister(watch)  # bytes of a next request, not a close: stop watching
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _wait_in_steps(
    client: Redis, key: str, timeout: float, watch: socket.socket | None
) -> Outcome | str | None:
    """``wait`` on clients without one plain connection to block on (cluster, fakeredis): BLPOPs of at
    most a second, looking at the client socket in between."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return None
        popped = client.blpop([key], timeout=min(1.0, max(0.01, left)))
        if popped:
            return Outcome.parse(str(popped[1]))
        if watch is not None and _closed(watch):
            return GONE


def _closed(sock: socket.socket) -> bool:
    """Whether the client closed its side: readable with nothing to read (EOF), or reset."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


def abandon(store: Store, settings: Settings, org: Org, task_id: str) -> str:
    """Cancel a call whose client left or whose time is up: QUEUED at once, PROCESSING at its next
    safe point (its completion included: it is not charged). Returns cancel.lua's verdict."""
    return cancel(store, org, [task_id], retention=settings.retention_seconds)[0]
