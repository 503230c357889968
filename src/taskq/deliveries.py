"""Webhook deliveries in Redis: claim, record, reap and redeliver, and the per-task delivery history.

A delivery is one attempt series of one webhook event: pending -> sending -> delivered | failed
(pending again between retries), with a log of its attempts. The completing script creates the first
one (the outbox) inside the task's hash; a redelivery adds another of the same event (same webhook-id,
same body) in a hash of its own (see ``keys.Shard.delivery_record``).

Every webhook body is built here in Python, by the views of ``taskq.schemas.tasks``: a completed or
failed task's by the worker before its script runs (``taskq.scheduler``); a canceled task's and a
batch.completed event's, whose scripts only record that the event is due, at its first claim, from
the task or batch record (fixed once finished), and stored with that attempt's record: every retry
sends the same bytes. The worker calls the async
functions with a redis.asyncio client; the intake calls the sync ones. Attempt log outcomes:
delivered, retry, gone, blocked, exhausted (a retry with the schedule spent) and lost (the sender died
before recording; see wh_reap.lua).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from taskq.errors import NotFound, NotRedeliverable
from taskq.keys import DELIVERY_FIELDS, Shard
from taskq.redistypes import Pipeline, Redis
from taskq.schemas.tasks import TERMINAL, TaskRecord, batch_event_view, event_view, iso_ms
from taskq.scripts import Op, Scripts
from taskq.store import Org, Store, now_ms

Decision = Literal["delivered", "retry", "failed", "defer"]

#: Most deliveries one task can have (the first plus redeliveries); bounds what a client can queue.
MAX_DELIVERIES_PER_TASK = 20


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery leased for one attempt (what wh_claim.lua returns).

    ``body`` is None when it had to be built at this claim and its task or batch record is gone;
    ``built``: built at this claim, to be stored with this attempt's record.
    """

    id: str
    url: str
    event: str
    body: str | None
    org: str
    attempt: int
    task: str
    secrets_json: str
    built: bool = False


def new_delivery_id() -> str:
    return uuid.uuid4().hex


def event_body(task: TaskRecord) -> str:
    """The webhook body of a finished task, serialized as the completing script's outbox record is."""
    return json.dumps(event_view(task), separators=(",", ":"))


def built_body(kind: str, source_id: str, flat: list[Any]) -> str | None:
    """The body of a delivery its script stored none for, from the record wh_claim.lua read: a task's
    (``kind`` "task": a canceled task) or a batch's ("batch": batch.completed). None when it is gone."""
    fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
    if not fields:
        return None
    if kind == "batch":
        return json.dumps(batch_event_view(source_id, fields), separators=(",", ":"))
    return event_body(TaskRecord.from_hash(source_id, fields))


def log_line(
    at_ms: int, attempt: int, status: int | None, error: str | None, duration_ms: int | None, outcome: str
) -> str:
    return json.dumps(
        {
            "at": at_ms,
            "attempt": attempt,
            "status": status,
            "error": error,
            "durationMs": duration_ms,
            "outcome": outcome,
        },
        separators=(",", ":"),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# The worker's side (redis.asyncio) ---------------------------------------------------------------
def claim_op(shard: Shard, now: int, lease_until: int, limit: int) -> Op[tuple[list[Claimed], int | None]]:
    """The wh_claim call that leases up to limit due deliveries; its reply: the deliveries (each with
    its body, built here when its script stored none) and when the next waiting one is due (ms) or None."""
    keys = [shard.wh_due, shard.wh_proc]
    return Op("wh_claim", keys, [shard.tag, now, lease_until, limit], _claims)


async def claim(
    scripts: Scripts, shard: Shard, now: int, lease_until: int, limit: int
) -> tuple[list[Claimed], int | None]:
    """Lease up to limit due deliveries; also return when the next waiting one is due (ms) or None."""
    op = claim_op(shard, now, lease_until, limit)
    return op.parse(await scripts[op.script](keys=op.keys, args=op.args))


def _claims(raw: Any) -> tuple[list[Claimed], int | None]:
    head = _text(raw[0])
    return [_claimed(r) for r in raw[1:]], (int(float(head)) if head else None)


def _claimed(r: list[Any]) -> Claimed:
    body: str | None = _text(r[3])
    built = len(r) > 8  # no body stored: r[8:11] say what to build it from (kind, id, record)
    if built:
        body = built_body(_text(r[8]), _text(r[9]), r[10])
    return Claimed(
        id=_text(r[0]),
        url=_text(r[1]),
        event=_text(r[2]),
        body=body,
        org=_text(r[4]),
        attempt=int(r[5]),
        task=_text(r[6]),
        secrets_json=_text(r[7]),
        built=built,
    )


def record_op(
    shard: Shard,
    item: Claimed,
    decision: Decision,
    *,
    now: int,
    next_ms: int = 0,
    line: str = "",
    retention_seconds: int,
) -> Op[str]:
    """The wh_record call that records one attempt (or a deferral); attempts recorded meanwhile share
    one call (``Op.shared``). Its reply: the delivery state afterwards, "stale" or "missing"."""
    keys = [shard.wh_due, shard.wh_proc]
    shared = [shard.tag, retention_seconds]
    body = item.body if item.built and item.body else ""  # a body built at the claim is stored
    item_args = [item.id, item.attempt, now, decision, next_ms, line, body]
    return Op("wh_record", keys, [*shared, *item_args], _first_state, shared=len(shared))


def _first_state(reply: Any) -> str:
    return _text(reply[0])


async def reap(scripts: Scripts, shard: Shard, now: int, limit: int = 1000) -> int:
    """Put deliveries whose lease expired back in the due set; returns how many."""
    return int(await scripts["wh_reap"](keys=[shard.wh_due, shard.wh_proc], args=[shard.tag, now, limit]))


# The intake's side (sync redis) ------------------------------------------------------------------
def redeliver(store: Store, org: Org, task_id: str) -> tuple[str, str]:
    """Queue a new delivery of a finished task's webhook event; returns (delivery id, event id).

    Raises NotFound for an unknown task or another organization's, NotRedeliverable otherwise.
    """
    task = store.task(org, task_id)
    delivery = new_delivery_id()
    result = store.scripts["wh_redeliver"](
        keys=[org.shard.wh_due],
        args=[
            org.shard.tag,
            task_id,
            org.id,
            delivery,
            now_ms(),
            event_body(task),
            MAX_DELIVERIES_PER_TASK,
        ],
    )
    match [_text(v) for v in result]:
        case ["ok", event]:
            return delivery, event
        case ["missing"]:
            raise NotFound(f"Task {task_id} not found", {"id": task_id})
        case ["not_terminal", status]:
            raise NotRedeliverable(
                f"Task {task_id} is {status}; its webhook is sent when it is COMPLETED or FAILED",
                {"id": task_id, "status": status},
            )
        case ["no_webhook"]:
            raise NotRedeliverable(f"Task {task_id} was created without a webhook url", {"id": task_id})
        case ["too_many", limit]:
            raise NotRedeliverable(
                f"Task {task_id} already has {limit} webhook deliveries, the most one task can have",
                {"id": task_id, "limit": int(limit)},
            )
    raise RuntimeError(f"wh_redeliver returned {result!r}")


def _attempt_view(raw: str) -> dict[str, Any]:
    entry = json.loads(raw)
    return {
        "at": iso_ms(int(entry["at"])),
        "attempt": entry["attempt"],
        "statusCode": entry["status"],
        "error": entry["error"],
        "durationMs": entry["durationMs"],
        "outcome": entry["outcome"],
    }


def _delivery_view(delivery_id: str, fields: dict[str, str]) -> dict[str, Any]:
    pending = fields["state"] == "pending"
    next_ms = fields.get("next") or fields.get("created")
    return {
        "deliveryId": delivery_id,
        "eventId": fields["event"],
        "state": fields["state"],
        "createdAt": iso_ms(int(fields["created"])),
        "nextAttemptAt": iso_ms(int(next_ms)) if pending and next_ms else None,
        "attempts": [_attempt_view(line) for line in attempt_log(fields)],
    }


def _fields(values: list[Any]) -> dict[str, str]:
    return {name: _text(v) for name, v in zip(DELIVERY_FIELDS, values, strict=True) if v is not None}


def _read(client: Redis | Pipeline, shard: Shard, delivery_id: str) -> Any:
    """HMGET of a delivery's record, wherever it lives (on a client, or queued on a pipeline)."""
    key, prefix = shard.delivery_record(delivery_id)
    return client.hmget(key, [prefix + name for name in DELIVERY_FIELDS])


def stored(client: Redis, shard: Shard, delivery_id: str) -> dict[str, str]:
    """One delivery's record (keys.DELIVERY_FIELDS); {} once it has expired."""
    return _fields(_read(client, shard, delivery_id))


def attempt_log(fields: dict[str, str]) -> list[str]:
    """A delivery record's attempt log: one JSON line per attempt, oldest first."""
    log = fields.get("log")
    return log.split("\n") if log else []


def history(store: Store, org: Org, task_id: str) -> dict[str, Any]:
    """GET /v1/async/task/{id}/deliveries: the task's webhook state and every delivery, newest last."""
    task = store.task(org, task_id)
    shard, client = org.shard, store.client
    ids: list[str] = [_text(i) for i in client.lrange(shard.task_deliveries(task_id), 0, -1)]
    last = client.hget(shard.task(task_id), "wh_last")
    if last and _text(last) not in ids:  # the completing script did not start the list
        ids.append(_text(last))
    pipe = client.pipeline(transaction=False)
    for delivery in ids:
        _read(pipe, shard, delivery)
    found = [
        (delivery, fields)
        for delivery, fields in zip(ids, map(_fields, pipe.execute()), strict=True)
        if fields  # expired with its retention
    ]
    webhook = None
    if task.webhook_url:
        webhook = {
            "url": task.webhook_url,
            "delivered": task.delivered_ms is not None,
            "deliveredAt": iso_ms(task.delivered_ms) if task.delivered_ms is not None else None,
            "state": task.delivery_state if task.status in TERMINAL else None,
            "attempts": sum(int(fields.get("attempts", 0)) for _, fields in found),
        }
    deliveries = [_delivery_view(delivery, fields) for delivery, fields in found]
    return {"taskId": task_id, "webhook": webhook, "deliveries": deliveries}
