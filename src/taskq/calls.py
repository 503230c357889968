"""Synchronous calls through the queue: admit one call as a task above every async priority, wait for
its outcome without polling, charge it once its answer is in hand, and cancel it when its client
leaves or its time is up.

A call is admitted by the same Lua script as a batch (admit.lua, flagged synchronous): it takes one
of the organization's concurrency slots (shared with its PROCESSING tasks) or is refused at once,
and reserves its credits like any task. Workers run it like any task; when it finishes, the
terminal transition pushes its id, status and result (or error) to the inbox of the intake process
that admitted it, ``T:inbox:<inbox id>``, in the same atomic step. Each process has one ``Inbox``
per Redis client: one reader thread per shard blocks on the inbox list (BLPOP) for all the calls
the process waits for, hands each outcome to its waiting thread, and charges the completed ones it
handed over (collect.lua, one script call per batch popped, sent with its next BLPOP); one watcher
thread polls the waiting clients' sockets to notice a hang-up at once. A waiting call costs a
parked thread, no Redis connection and no system call. Concurrent admissions go to Redis together
(``Admissions``).

A completed call is charged only once its answer has reached the thread that answers its client:
if that process is gone (crash, kill) or the thread gave up, nobody collects it and the reaper
refunds it SYNC_COLLECT_MS (30 s) after it completed (reap.lua).
"""

from __future__ import annotations

import logging
import os
import random
import select
import socket
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
import redis

from taskq.admission import provider_errors
from taskq.errors import CallFailed, ConcurrencyLimitExceeded, InsufficientCredits, TaskqError, Unauthorized
from taskq.keys import Shard
from taskq.pricing import credits_for
from taskq.scheduler import SYNC_PRIORITY, cancel
from taskq.schemas.tasks import FieldError, TaskRequest
from taskq.scripts import Scripts
from taskq.settings import Settings
from taskq.store import Org, Store, now_ms

log = logging.getLogger(__name__)

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
class Outcome:
    """A finished call: its status (COMPLETED, FAILED, CANCELED) and its result or error (JSON text)."""

    status: str
    body: str

    @classmethod
    def parse(cls, reply: str) -> Outcome:
        status, _, body = reply.partition("\n")
        return cls(status, body)


class Waiter:
    """One admitted call that a thread of this process waits for."""

    __slots__ = ("__weakref__", "gone", "outcome", "ready", "shard", "task_id")

    def __init__(self, task_id: str, shard: Shard) -> None:
        self.task_id = task_id
        self.shard = shard
        self.ready = threading.Event()
        self.outcome: Outcome | None = None
        self.gone = False


@dataclass(frozen=True, slots=True)
class Admitted:
    task_id: str
    cost: int
    slots: Slots
    credits_left: int  # the balance less every reservation, this call's included, at admission
    waiter: Waiter = field(repr=False, compare=False)  # its inbox entry lives as long as this does


@dataclass(frozen=True, slots=True)
class Refused:
    """A call refused after validation (no concurrency slot, no credits): it still reports the slots."""

    error: TaskqError
    slots: Slots


class Inbox:
    """The synchronous calls one process waits for on one Redis client, and their answers.

    Waiters are held weakly: a call's entry goes when its request does (``Admitted.waiter``). A
    reader thread per shard runs while the shard has waiters: it pops every outcome pushed to this
    inbox, wakes the waiters, and charges the completed calls it handed over. An outcome nobody here
    waits for any more (the call timed out, its client left) is dropped: a completed one is then not
    charged (the reaper refunds it)."""

    def __init__(self, store: Store) -> None:
        self.id = quick_uuid()
        # the client and its scripts, not the store: _inboxes holds the store weakly
        self.client, self.scripts = store.client, store.scripts
        self._store = weakref.ref(store)  # gone: its app is gone, nothing will read this inbox again
        self._lock = threading.Lock()
        # task id -> its waiter, held weakly; plain dict operations (atomic under the GIL), so that a
        # burst of calls registering at once does not queue on a lock
        self._waiters: dict[str, weakref.ref[Waiter]] = {}
        self._readers: set[int] = set()  # shards with a reader thread
        self.watcher = Watcher()
        self.admissions = Admissions(store.client, store.scripts)

    def expect(self, task_id: str, shard: Shard) -> Waiter:
        """Register a call before it is admitted (its answer may come before admit returns)."""
        waiter = Waiter(task_id, shard)
        self._waiters[task_id] = weakref.ref(waiter, partial(self._forget, task_id))
        # Registered first, then the reader looked for; a reader stopping forgets itself first, then
        # looks for waiters (_idle): one of the two always sees the other.
        if shard.index not in self._readers:
            with self._lock:
                if shard.index not in self._readers:
                    self._readers.add(shard.index)
                    threading.Thread(target=self._read, args=(shard,), name=f"taskq-inbox-{shard.index}",
                                     daemon=True).start()  # fmt: skip
        return waiter

    def _forget(self, task_id: str, _: object) -> None:
        self._waiters.pop(task_id, None)

    def waiter(self, task_id: str) -> Waiter | None:
        ref = self._waiters.get(task_id)
        return ref() if ref is not None else None

    def _idle(self, shard: Shard) -> bool:
        """Stop this shard's reader when nothing here waits on it any more."""
        with self._lock:
            self._readers.discard(shard.index)
            for ref in list(self._waiters.values()):
                waiter = ref()
                if waiter is not None and waiter.shard.index == shard.index:
                    self._readers.add(shard.index)
                    return False
            return True

    def _read(self, shard: Shard) -> None:
        """Pop outcomes, charge the completed calls about to be handed over, and wake their waiters.
        Each round is one round trip: the charges, a BLPOP, and an LPOP of whatever else came
        (pipelined: Redis runs the LPOP as soon as the BLPOP is answered)."""
        key = shard.inbox(self.id)
        handed: list[tuple[Waiter, Outcome]] = []  # popped last round, handed over this round
        failing = False
        while True:
            try:
                popped, more = self._round(shard, key, handed)
            except redis.RedisError as exc:
                if self._store() is None or self._idle(shard):
                    return
                if not failing:  # once per outage
                    log.warning("reading the synchronous calls' inbox %s failed (%s); retrying", key, exc)
                failing = True
                time.sleep(0.5)
                continue
            finally:
                _wake(handed)  # (done already, unless the round failed first: then not charged)
            failing = False
            if popped is None:
                if self._idle(shard):
                    return
                handed = []
                continue
            handed = self._waiting([popped[1], *(more or [])])

    def _round(self, shard: Shard, key: str, handed: list[tuple[Waiter, Outcome]]) -> tuple[Any, Any]:
        """Charge the completed calls in `handed`, hand every outcome over, then wait for more."""
        ids = [w.task_id for w, outcome in handed if outcome.status == "COMPLETED"]
        script = self.scripts["collect"]
        charge = ("EVALSHA", script.sha, 1, shard.collect, shard.tag, *ids)
        wait = [("BLPOP", key, 1), ("LPOP", key, 1000)]
        client: Any = self.client
        replies: list[Any] = []
        if type(client) is redis.Redis and client.connection is None:
            # One send: the charge, then the wait for more. Everyone is answered once the charge is
            # done, and before the wait is.
            commands = [charge, *wait] if ids else wait
            pool: Any = client.connection_pool
            conn: Any = pool.get_connection()
            try:
                conn.send_packed_command(conn.pack_commands(commands))
                for at in range(len(commands)):
                    if at == len(commands) - len(wait):
                        _wake(handed)
                    try:
                        replies.append(conn.read_response())
                    except redis.ResponseError as exc:
                        replies.append(exc)
                    if ids and at == 0:
                        self._charged(shard, ids, replies.pop())
            except BaseException:
                conn.disconnect()
                raise
            finally:
                pool.release(conn)
        else:  # cluster, fakeredis: charge, answer, then wait
            if ids:
                self._charged(shard, ids, None)
            _wake(handed)
            pipe = client.pipeline(transaction=False)
            for command in wait:
                pipe.execute_command(*command)
            replies = pipe.execute()
        if isinstance(replies[0], Exception) or isinstance(replies[1], Exception):
            raise replies[0] if isinstance(replies[0], Exception) else replies[1]
        return replies[0], replies[1]

    def _charged(self, shard: Shard, ids: list[str], reply: Any) -> None:
        """Charge (collect.lua) the calls `ids`, unless `reply` says that was done."""
        if reply is None or isinstance(reply, redis.exceptions.NoScriptError):  # not run yet: run it
            try:
                reply = self.scripts["collect"](keys=[shard.collect], args=[shard.tag, *ids])
            except redis.RedisError as exc:
                reply = exc
        if isinstance(reply, Exception):  # not charged: the reaper refunds them
            log.warning("charging %d synchronous calls failed: %s", len(ids), reply)

    def _waiting(self, items: list[str]) -> list[tuple[Waiter, Outcome]]:
        """The outcomes someone here still waits for, with their waiters. The others are dropped: a
        completed one is not charged (the reaper refunds it)."""
        found: list[tuple[Waiter, Outcome]] = []
        for item in items:
            task_id, _, reply = str(item).partition("\n")
            waiter = self.waiter(task_id)
            if waiter is not None and waiter.outcome is None and not waiter.gone:
                found.append((waiter, Outcome.parse(reply)))
        return found


def _wake(handed: list[tuple[Waiter, Outcome]]) -> None:
    for waiter, outcome in handed:
        if waiter.outcome is None:
            waiter.outcome = outcome
            waiter.ready.set()


class Watcher:
    """One thread per process that notices waiting clients hanging up: an epoll over their sockets
    (the kernel watches them; the thread runs only when one becomes readable)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._poll: Any = None
        self._watched: dict[int, tuple[socket.socket, Waiter]] = {}

    def add(self, sock: socket.socket, waiter: Waiter) -> int:
        fd = sock.fileno()
        with self._lock:
            if self._poll is None:
                self._poll = select.epoll()
                watch = threading.Thread(target=self._run, args=(self._poll,), name="taskq-hangups")
                watch.daemon = True
                watch.start()
            self._watched[fd] = (sock, waiter)
            self._poll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        return fd

    def remove(self, fd: int) -> None:
        with self._lock:
            if self._watched.pop(fd, None) is not None:
                self._poll.unregister(fd)

    def _run(self, poll: Any) -> None:
        while True:
            events = poll.poll(1.0)
            with self._lock:
                if not events and not self._watched:
                    self._poll = None
                    poll.close()
                    return
                hits = [(fd, self._watched.pop(fd, None)) for fd, _ in events]
                for fd, entry in hits:
                    if entry is not None:
                        poll.unregister(fd)
            for _, entry in hits:
                if entry is not None and _closed(entry[0]):
                    entry[1].gone = True
                    entry[1].ready.set()
                # else: bytes of a next request, not a close: stop watching


class Admissions:
    """The admissions of one process's concurrent calls, sent to Redis together (a group commit):
    a call arriving while another's admission is on its way joins the queue; when the one under way
    is answered, the first call queued takes the whole queue and sends it as one pipeline of
    admit.lua calls (one round trip, one connection, for all of them), each still its own script
    call with its own verdict. A lone call goes at once."""

    def __init__(self, client: Any, scripts: Scripts) -> None:
        self.client, self.scripts = client, scripts
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._sending = False

    def run(self, keys: list[str], args: list[Any]) -> Any:
        """admit.lua's reply for these keys and arguments (raises what the script call raised)."""
        item = _Pending(keys, args)
        with self._lock:
            self._queue.append(item)
            lead = not self._sending
            self._sending = True
        if not lead:
            item.done.wait()
            lead = item.lead  # handed the queue: this call sends it (its own admission included)
        if lead:
            with self._lock:
                batch, self._queue = self._queue, []
            try:
                self._send(batch)
            finally:
                with self._lock:
                    if self._queue:
                        self._queue[0].lead = True
                        self._queue[0].done.set()
                    else:
                        self._sending = False
        if item.error is not None:
            raise item.error
        return item.reply

    def _send(self, batch: list[_Pending]) -> None:
        script = self.scripts["admit"]
        try:
            if len(batch) == 1:
                batch[0].reply = script(keys=batch[0].keys, args=batch[0].args)
                return
            pipe = self.client.pipeline(transaction=False)
            for item in batch:
                pipe.execute_command("EVALSHA", script.sha, len(item.keys), *item.keys, *item.args)
            replies = pipe.execute(raise_on_error=False)
            for item, reply in zip(batch, replies, strict=True):
                if isinstance(reply, redis.exceptions.NoScriptError):  # not run: load it and run it
                    try:
                        reply = script(keys=item.keys, args=item.args)
                    except Exception as exc:
                        reply = exc
                if isinstance(reply, Exception):
                    item.error = reply
                else:
                    item.reply = reply
        except BaseException as exc:
            for item in batch:
                if item.reply is None and item.error is None:
                    item.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for item in batch:
                item.lead = False
                item.done.set()


class _Pending:
    __slots__ = ("args", "done", "error", "keys", "lead", "reply")

    def __init__(self, keys: list[str], args: list[Any]) -> None:
        self.keys, self.args = keys, args
        self.done = threading.Event()
        self.lead = False
        self.reply: Any = None
        self.error: BaseException | None = None


_inboxes: weakref.WeakKeyDictionary[Store, Inbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()
os.register_at_fork(after_in_child=_inboxes.clear)  # threads do not survive a fork: start afresh


def inbox(store: Store) -> Inbox:
    """This process's inbox on `store` (created at its first call)."""
    found = _inboxes.get(store)
    if found is None:
        with _inboxes_lock:
            found = _inboxes.get(store)
            if found is None:
                found = _inboxes[store] = Inbox(store)
    return found


def check(task: TaskRequest, settings: Settings) -> list[FieldError]:
    """The checks that need settings: the task type's provider is configured here."""
    return provider_errors(task, settings)


def price(task: TaskRequest, settings: Settings) -> int:
    """A synchronous call costs the async price plus the surcharge (cloro-api.md §9)."""
    return credits_for(task, settings.price(task.task_type) + settings.sync_surcharge)


def admit(store: Store, settings: Settings, org: Org, task: TaskRequest) -> Admitted | Refused:
    """Admit one call, or say why not (ConcurrencyLimitExceeded, InsufficientCredits) with the slots."""
    shard = org.shard
    box = inbox(store)
    task_id = quick_uuid()
    waiter = box.expect(task_id, shard)
    cost = price(task, settings)
    packed = [[task_id, task.task_type, SYNC_PRIORITY, cost, "", "", 0, 1, 0, box.id]]
    payload = task.payload.__pydantic_serializer__.to_json(task.payload)
    reply = box.admissions.run(
        [shard.org(org.id), shard.seq, shard.rr, shard.turn, shard.capped, shard.wake, shard.delayed],
        [shard.tag, org.id, now_ms(), orjson.dumps(packed), "", 1, "", settings.batch_ttl_seconds, payload],
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
    return Admitted(task_id, cost, slots, int(reply[4]), waiter)


def wait(
    store: Store, org: Org, task_id: str, timeout: float, watch: socket.socket | None
) -> Outcome | str | None:
    """Block until the call finishes (its Outcome), its client closes `watch` (GONE), or `timeout`
    seconds pass (None). The thread parks on the call's event: the process's inbox reader wakes it
    with the outcome, its hang-up watcher when the client leaves."""
    box = inbox(store)
    waiter = box.waiter(task_id)
    if waiter is None:
        raise CallFailed("no synchronous call of this process has this id")
    fd = box.watcher.add(watch, waiter) if watch is not None else None
    try:
        waiter.ready.wait(max(0.0, timeout))
    finally:
        if fd is not None:
            box.watcher.remove(fd)
    if waiter.outcome is not None:
        return waiter.outcome
    if waiter.gone:
        return GONE  # from now on an outcome for this call is not handed over (nor charged)
    return None


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
