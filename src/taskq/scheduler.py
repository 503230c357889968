"""Queue transitions after admission: clear, claim, renew, ack, fail, retry, release and reap (and the
trimming of expired tasks from the org listings).

Each transition is one Lua call, described here as an ``Op``: its script, keys, arguments and how to
read the reply. The asyncio worker runs them on ``redis.asyncio`` (``taskq.worker.clients``), so the
rules live in one place.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from taskq.errors import Code, NotFound, TaskAlreadyFinished
from taskq.keys import Shard
from taskq.schemas.tasks import TaskRecord, TaskStatus, TaskType, event_view
from taskq.scripts import Op
from taskq.store import Org, Store, now_ms

CLEAR_CHUNK = 1000
PROMOTE_LIMIT = 100  # due retries moved back to their lanes per claim call
REAP_LIMIT = 500  # expired leases handled per reap call
#: The lane of synchronous calls (taskq.calls): above every async priority (1..10).
SYNC_PRIORITY = 11
TRIM_LIMIT = 1000  # listing entries looked at per trim call
ALL_TYPES = [t.value for t in TaskType]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A leased task: what a worker needs to run it and to prove it still holds it."""

    shard: Shard
    id: str
    token: str
    task_type: str
    payload_json: str
    org: str
    priority: int
    created_ms: int
    idempotency_key: str
    webhook_url: str
    cost: int
    attempts: int
    started_ms: int
    batch: str
    key: str = ""  # fingerprint of the API key this call may use (flow control), "" when not paced
    probe: bool = False  # the call probes a key whose quota was exhausted
    reserved: float = 0.0  # tokens the claim reserved for this call (a tokens-per-minute limit)
    leased_until: int = 0  # the lease deadline the claim set (ms); 0 when not known

    @classmethod
    def from_reply(cls, shard: Shard, row: Sequence[Any], leased_until: int = 0) -> Claimed:
        (id_, token, ttype, payload, org, prio, created, idem, webhook, cost, attempts, started, batch,
         *flow) = (str(x) for x in row)  # fmt: skip
        key, probe, reserved = [*flow, "", "", ""][:3]
        return cls(shard, id_, token, ttype, payload, org, int(prio), int(created), idem, webhook,
                   int(cost or 0), int(attempts or 0), int(started or 0), batch, key,
                   probe == "1", float(reserved or 0), leased_until)  # fmt: skip

    def finish_fields(self) -> list[str | int]:
        """The record's fields queue_lib.lua's FINISH_FIELDS names, in its order, as the claim read them:
        an ack passes them rather than have Redis read them back."""
        return [self.org, self.idempotency_key, self.webhook_url, self.task_type, self.started_ms, self.batch,
                self.cost, self.priority]  # fmt: skip

    def record(
        self, status: TaskStatus, now: int, *, result: str | None = None, error: str | None = None
    ) -> TaskRecord:
        """The task as it will read once this terminal transition is stored."""
        return TaskRecord(
            id=self.id,
            org=self.org,
            task_type=self.task_type,
            status=status.value,
            priority=self.priority,
            created_ms=self.created_ms,
            payload_json=self.payload_json,
            idempotency_key=self.idempotency_key or None,
            webhook_url=self.webhook_url or None,
            cost=self.cost,
            charged=self.cost if status == TaskStatus.COMPLETED else 0,
            attempts=self.attempts,
            started_ms=self.started_ms,
            finished_ms=now,
            result_json=result,
            error_json=error,
            batch=self.batch or None,
            delivered_ms=None,
            delivery_state="pending" if self.webhook_url else None,
        )


@dataclass(frozen=True, slots=True)
class Reaped:
    requeued: int
    exhausted: list[Claimed]


def _first_ok(reply: Any) -> bool:
    return int(reply[0]) == 1


def _ok(reply: Any) -> bool:
    return int(reply) == 1


class Claims(list[Claimed]):
    """What one claim leased, and in how many ms a lane holding back queued tasks reopens (None: no
    lane does; see taskq.flow)."""

    reopens_ms: int | None = None


def _claims(shard: Shard, reply: Any, leased_until: int) -> Claims:
    claims = Claims(Claimed.from_reply(shard, row, leased_until) for row in reply[:-1])
    claims.reopens_ms = int(reply[-1]) if int(reply[-1]) >= 0 else None
    return claims


def claim(
    shard: Shard, caps: Mapping[str, int | None], *, now: int, lease_ms: int, k: int, flow: str = ""
) -> Op[Claims]:
    """Lease up to k tasks of the given types (type -> provider cap, None = no cap); ``flow`` is the
    flow spec (``taskq.flow.spec``) pacing each type's calls, "" for none."""
    pairs = [x for ttype, cap in caps.items() for x in (ttype, -1 if cap is None else cap)]
    return Op(
        "claim",
        [shard.proc, shard.delayed, shard.pinflight, shard.fence, shard.rr, shard.flow],
        [shard.tag, now, lease_ms, k, PROMOTE_LIMIT, len(caps), *pairs, flow],
        lambda reply: _claims(shard, reply, now + lease_ms),
    )


def renew(shard: Shard, held: Sequence[Claimed], *, deadline: int) -> Op[set[str]]:
    """Extend every lease still held; the reply is the set of ids whose lease was lost."""
    pairs = [x for task in held for x in (task.id, task.token)]
    return Op("renew", [shard.proc], [shard.tag, deadline, *pairs], lambda lost: {str(i) for i in lost})


def reap(shard: Shard, *, now: int, max_attempts: int, retention: int) -> Op[Reaped]:
    """Requeue expired leases; tasks out of attempts come back for ``lost()``; tasks whose cancel was
    requested become CANCELED (an expired lease is a cancellation safe point)."""

    def parse(reply: Any) -> Reaped:
        return Reaped(int(reply[0]), [Claimed.from_reply(shard, row) for row in reply[1:]])

    args = [shard.tag, now, REAP_LIMIT, max_attempts, retention]
    return Op("reap", [shard.proc], args, parse)


def trim_listing(shard: Shard, org_id: str, *, limit: int = TRIM_LIMIT) -> Op[int]:
    """Drop expired tasks from the head of an org's task listing; the reply is how many went."""
    keys = [shard.org_tasks(org_id), shard.org(org_id)]
    return Op("trim_listing", keys, [shard.tag, limit], int)


def complete(task: Claimed, result: Mapping[str, Any], *, now: int, retention: int) -> Op[bool]:
    """COMPLETED: result stored, credits charged, webhook queued, in one step; False if fenced out."""
    result_json = orjson.dumps(result).decode()
    body = ""  # a task admitted without a webhook url never gets one: no event to build or send
    if task.webhook_url:
        # The webhook body is the event view with the result object itself (not parsed back from its JSON).
        view = event_view(task.record(TaskStatus.COMPLETED, now))
        view["response"] = result
        body = orjson.dumps(view).decode()
    shared = [task.shard.tag, retention]
    item = [task.id, task.token, now, body, result_json, *task.finish_fields()]
    return Op("ack", [task.shard.proc], [*shared, *item], _first_ok, shared=len(shared))


def fail(
    task: Claimed, code: Code, message: str, *, now: int, retention: int, only_expired: bool = False
) -> Op[bool]:
    """FAILED with {code, message}: nothing charged, reservation released, webhook queued."""
    error = json.dumps({"code": code.value, "message": message}, separators=(",", ":"))
    body = _body(task.record(TaskStatus.FAILED, now, error=error))
    args = [task.shard.tag, task.id, task.token, now, retention, body, error]
    return Op("fail", [task.shard.proc], [*args, "1" if only_expired else "0"], _ok)


def lost(task: Claimed, *, now: int, retention: int) -> Op[bool]:
    """The reaper's verdict on a task whose workers died max_attempts times."""
    message = f"worker lost the task {task.attempts} times"
    return fail(task, Code.WORKER_LOST, message, now=now, retention=retention, only_expired=True)


def retry(
    task: Claimed, *, due: int, now: int, retention: int, code: Code | None = None, message: str = ""
) -> Op[bool]:
    """Back to QUEUED, waiting in the retry set until due (ms); CANCELED instead if cancel was requested.
    The error (code, message) goes in the task's attempt log."""
    error = json.dumps({"code": code.value if code else None, "message": message}, separators=(",", ":"))
    args = [task.shard.tag, task.id, task.token, due, now, retention, error]
    return Op("retry", [task.shard.proc, task.shard.delayed], args, _ok)


def release(task: Claimed, *, now: int, retention: int) -> Op[bool]:
    """Give the task back unharmed: its place in line, this claim not counted as an attempt; CANCELED
    instead if its cancel was requested while it ran."""
    args = [task.shard.tag, task.id, task.token, now, retention]
    return Op("release", [task.shard.proc], args, _ok)


def sync_deadline(task: Claimed, timeout_seconds: float) -> int | None:
    """When a synchronous call must have started its last attempt (ms); None for an async task."""
    if task.priority != SYNC_PRIORITY:
        return None
    return task.created_ms + int(timeout_seconds * 1000)


def timeout_message(seconds: float) -> str:
    """The reference's message for a synchronous call out of time: "Maximum timeout (5 minutes) exceeded"."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"Maximum timeout ({minutes} minute{'s' if minutes != 1 else ''}) exceeded"
    return f"Maximum timeout ({seconds:g} second{'s' if seconds != 1 else ''}) exceeded"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a provider refused a call for a reason that is not the task's (see throttle.lua)."""

    kind: str  # "rate" | "quota" | "auth"
    message: str
    wait: float | None = None  # seconds the provider asked to wait
    limit: float | None = None  # calls/s the provider stated as its limit


#: throttle.lua's replies.
THROTTLED, FENCED, MUST_FAIL = 1, 0, 2


def throttle(
    task: Claimed,
    refusal: Refusal,
    *,
    rate: float,
    burst: int,
    pool: Sequence[str],
    now: int,
    retention: int,
    give_up_seconds: float,
    probe_seconds: float,
    clock: int | None = None,
) -> Op[int]:
    """Pause the task's key for every worker and put the task back in line without spending an attempt;
    the reply is THROTTLED, FENCED, or MUST_FAIL (gave up waiting / the lane's last key)."""
    wait = "" if refusal.wait is None else int(refusal.wait * 1000)
    limit = "" if refusal.limit is None else refusal.limit
    args = [task.shard.tag, task.id, task.token, now, retention, refusal.kind, task.key, rate, burst, wait,
            limit, refusal.message, int(give_up_seconds * 1000), int(probe_seconds * 1000), ",".join(pool),
            "" if clock is None else clock]  # fmt: skip
    return Op("throttle", [task.shard.proc, task.shard.flow], args, int)


@dataclass(frozen=True, slots=True)
class Note:
    """What a call's responses said about its key (flow_note.lua): stated limits (calls/s, tokens/s),
    a pause (s), the tokens the call used (None: unknown) and what its claim reserved."""

    limit: float | None = None
    token_limit: float | None = None
    pause: float | None = None
    used: int | None = None
    reserved: float = 0.0


def note(
    task: Claimed, note: Note, *, rate: float, burst: int, tokens: float, clock: int | None = None
) -> Op[bool]:
    """Note what a call of the task's key learned (notes of one shard share a script call)."""
    pause = "" if note.pause is None else int(note.pause * 1000)
    item = [task.task_type, task.key, rate, burst, tokens, _blank(note.limit), _blank(note.token_limit),
            pause, _blank(note.used), note.reserved]  # fmt: skip
    shared = ["" if clock is None else clock]
    return Op("flow_note", [task.shard.flow], [*shared, *item], _first_ok, shared=len(shared))


def _blank(value: float | None) -> float | str:
    return "" if value is None else value


def backoff(attempts: int, *, base: float, cap: float, hint: float | None, rng: random.Random) -> float:
    """Seconds before a retry: exponential with jitter, capped, never sooner than the provider asked."""
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return max(hint or 0.0, rng.uniform(ceiling / 2, ceiling))


def after_error(
    task: Claimed,
    code: Code,
    message: str,
    *,
    retryable: bool,
    retry_after: float | None,
    now: int,
    max_attempts: int,
    base: float,
    cap: float,
    retention: int,
    rng: random.Random,
    deadline: int | None = None,
    deadline_message: str = "",
) -> Op[bool]:
    """Retry a retryable error while attempts remain (and, for a synchronous call, before its
    deadline in ms), else fail with the provider's code (DEADLINE_EXCEEDED past the deadline)."""
    if not retryable:
        return fail(task, code, message, now=now, retention=retention)
    if task.attempts >= max_attempts:
        return fail(
            task, code, f"{message} (gave up after {task.attempts} attempts)", now=now, retention=retention
        )
    delay = backoff(task.attempts, base=base, cap=cap, hint=retry_after, rng=rng)
    due = now + int(delay * 1000)
    if deadline is not None and due >= deadline:
        return fail(
            task,
            Code.DEADLINE_EXCEEDED,
            f"{deadline_message}; last attempt: {message}",
            now=now,
            retention=retention,
        )
    return retry(task, due=due, now=now, retention=retention, code=code, message=message)


def _body(record: TaskRecord) -> str:
    return json.dumps(event_view(record), separators=(",", ":"))


def clear_queue(store: Store, org: Org, *, retention: int) -> int:
    """Remove every QUEUED task of the organization (in atomic chunks); return how many."""
    shard = org.shard
    total = 0
    while True:
        removed = int(
            store.scripts["clear"](
                keys=[shard.org(org.id), shard.delayed],
                args=[shard.tag, org.id, CLEAR_CHUNK, now_ms(), retention, *ALL_TYPES],
            )
        )
        total += removed
        if removed < CLEAR_CHUNK:
            return total


def cancel_op(org: Org, task_id: str, *, now: int, retention: int) -> Op[str]:
    """Cancel one task of an org: "canceled", "requested", "missing" or its terminal status (cancel.lua)."""
    shard = org.shard
    return Op("cancel", [shard.delayed], [shard.tag, task_id, org.id, now, retention], str)


def cancel(store: Store, org: Org, task_ids: Sequence[str], *, retention: int) -> list[str]:
    """Cancel tasks of one org in one round trip; per task the verdict of ``cancel_op``."""
    script = store.scripts["cancel"]
    pipe = store.client.pipeline(transaction=False)
    now = now_ms()
    for task_id in task_ids:
        op = cancel_op(org, task_id, now=now, retention=retention)
        script(keys=op.keys, args=op.args, client=pipe)
    return [str(r) for r in pipe.execute()] if task_ids else []


def cancel_task(store: Store, org: Org, task_id: str, *, retention: int) -> str:
    """Cancel one task: "canceled" (it was QUEUED) or "requested" (PROCESSING: at its next safe point).
    Raises NotFound for an unknown task, TASK_ALREADY_FINISHED for a finished one."""
    verdict = cancel(store, org, [task_id], retention=retention)[0]
    if verdict == "missing":
        raise NotFound(f"Task {task_id} not found", {"id": task_id})
    if verdict not in ("canceled", "requested"):
        raise TaskAlreadyFinished(
            f"Task {task_id} already finished ({verdict})", {"id": task_id, "status": verdict}
        )
    return verdict
