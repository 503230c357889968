"""Batches as resources and the task listing: read views over batch records and the org's task index."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from taskq.admission import Outcome, admit
from taskq.errors import NotFound, NothingToRetry, ValidationFailed
from taskq.keys import TASK_FIELDS
from taskq.providers import PAYLOAD_MODELS
from taskq.scheduler import cancel
from taskq.schemas.tasks import (
    TERMINAL,
    TaskRecord,
    TaskRequest,
    TaskStatus,
    TaskType,
    event_view,
    iso_ms,
    summary_view,
)
from taskq.settings import Settings
from taskq.store import Org, Store, task_fields

STATUSES = tuple(status.value for status in TaskStatus)
VIEW_FIELDS = ["status", "charged", "org"]


def _batch_fields(store: Store, org: Org, batch_id: str) -> dict[str, str]:
    fields: dict[str, str] = store.client.hgetall(org.shard.batch(batch_id))
    if not fields or fields.get("org") != org.id:
        raise NotFound(f"Batch {batch_id} not found", {"id": batch_id})
    return fields


def batch_task_ids(store: Store, org: Org, batch_id: str) -> list[str]:
    """Task ids of a batch by input index ('' where the task was rejected)."""
    _batch_fields(store, org, batch_id)
    ids: list[str] = store.client.lrange(org.shard.batch_ids(batch_id), 0, -1)
    return ids


def batch_view(store: Store, org: Org, batch_id: str) -> dict[str, Any]:
    """GET /v1/async/batch/{id}: counts per status, credits charged so far, times, task ids by index."""
    fields = _batch_fields(store, org, batch_id)
    ids = store.client.lrange(org.shard.batch_ids(batch_id), 0, -1)
    pipe = store.client.pipeline(transaction=False)
    admitted = [i for i in ids if i]
    for task_id in admitted:
        pipe.hmget(org.shard.task(task_id), VIEW_FIELDS)
    counts: Counter[str] = Counter()
    charged = 0
    for status, task_charged, _ in pipe.execute() if admitted else []:
        counts[status or "EXPIRED"] += 1
        charged += int(task_charged or 0)
    finished = fields.get("finished")
    return {
        "batchId": batch_id,
        "status": "COMPLETED" if finished else "IN_PROGRESS",
        "total": int(fields["total"]),
        "admitted": int(fields["admitted"]),
        "counts": {s: counts.get(s, 0) for s in STATUSES}
        | ({"EXPIRED": counts["EXPIRED"]} if counts["EXPIRED"] else {}),
        "creditsCharged": charged,
        "createdAt": iso_ms(int(fields["created"])),
        "finishedAt": iso_ms(int(finished)) if finished else None,
        "taskIds": [i or None for i in ids],
        "batchWebhook": {"url": fields["webhook"]} if fields.get("webhook") else None,
    }


def failed_tasks(store: Store, org: Org, batch_id: str) -> tuple[list[tuple[int, str]], list[TaskRequest]]:
    """The FAILED tasks of a batch as new requests (no idempotency key: the old one stays bound), with
    their (index, task id) in the source batch."""
    ids = batch_task_ids(store, org, batch_id)
    pipe = store.client.pipeline(transaction=False)
    indexed = [(i, t) for i, t in enumerate(ids) if t]
    for _, task_id in indexed:
        pipe.hmget(org.shard.task(task_id), ["status", "type", "payload", "prio", "webhook"])
    sources, items = [], []
    for (index, task_id), (status, task_type, payload, prio, webhook) in zip(
        indexed, pipe.execute() if indexed else [], strict=True
    ):
        if status != "FAILED":
            continue
        sources.append((index, task_id))
        items.append(
            TaskRequest(
                task_type=TaskType(task_type),
                payload=PAYLOAD_MODELS[task_type].model_validate_json(payload),
                priority=int(prio),
                idempotency_key=None,
                webhook_url=webhook or None,
            )
        )
    return sources, items


@dataclass(frozen=True, slots=True)
class BatchCanceled:
    canceled: int
    cancel_requested: int
    already_finished: int


def cancel_batch(store: Store, org: Org, batch_id: str, *, retention: int) -> BatchCanceled:
    """Cancel the rest of a batch: QUEUED tasks now, PROCESSING ones at their next safe point."""
    ids = [i for i in batch_task_ids(store, org, batch_id) if i]
    verdicts = cancel(store, org, ids, retention=retention)
    return BatchCanceled(
        canceled=verdicts.count("canceled"),
        cancel_requested=verdicts.count("requested"),
        already_finished=sum(1 for v in verdicts if v not in ("canceled", "requested", "missing")),
    )


@dataclass(frozen=True, slots=True)
class Retried:
    batch_id: str
    sources: list[tuple[int, str]]  # (index, task id) in the source batch, one per outcome
    outcomes: list[Outcome]


def retry_failed(store: Store, settings: Settings, org: Org, batch_id: str) -> Retried:
    """Submit the FAILED tasks of a batch again as a new batch (credits and queue limit apply)."""
    sources, items = failed_tasks(store, org, batch_id)
    if not items:
        raise NothingToRetry(f"Batch {batch_id} has no failed tasks to retry")
    new_batch = str(uuid.uuid4())
    outcomes = admit(store, settings, org, list(items), batch_id=new_batch)
    return Retried(new_batch, sources, outcomes)


@dataclass(frozen=True, slots=True)
class ResultsPage:
    lines: list[dict[str, Any]]
    next_cursor: str | None


def batch_results(store: Store, org: Org, batch_id: str, cursor: str | None, limit: int) -> ResultsPage:
    """Finished results of a batch in input order from cursor (an input index), up to limit lines."""
    start = _cursor(cursor)
    ids = batch_task_ids(store, org, batch_id)
    window = [(i, t) for i, t in enumerate(ids[start:], start) if t]
    lines: list[dict[str, Any]] = []
    next_index: int | None = None
    for chunk_start in range(0, len(window), 100):
        chunk = window[chunk_start : chunk_start + 100]
        pipe = store.client.pipeline(transaction=False)
        for _, task_id in chunk:
            pipe.hmget(org.shard.task(task_id), TASK_FIELDS)
        for (index, task_id), values in zip(chunk, pipe.execute(), strict=True):
            fields = task_fields(values)
            if len(lines) >= limit:
                next_index = index
                break
            if fields and fields.get("status") in TERMINAL:
                record = TaskRecord.from_hash(task_id, fields)
                lines.append({"index": index, "taskId": task_id, **event_view(record)})
        if next_index is not None:
            break
    return ResultsPage(lines, str(next_index) if next_index is not None else None)


#: Most digits a numeric query parameter may have (positions and limits fit in 18).
MAX_DIGITS = 18


def digits(raw: str) -> int | None:
    """The value of a query parameter written in ASCII digits only (at most MAX_DIGITS), else None.

    str.isdigit() alone also accepts superscripts (which int() refuses) and other scripts' digits
    (which int() reads): neither is a number a client of this API writes.
    """
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_DIGITS):
        return None
    return int(raw)


def _cursor(cursor: str | None) -> int:
    if cursor in (None, ""):
        return 0
    value = digits(cursor)
    if value is None:
        raise ValidationFailed(
            "Invalid cursor", [{"field": "cursor", "message": "must come from nextCursor"}]
        )
    return value


@dataclass(frozen=True, slots=True)
class TaskFilter:
    status: str | None = None
    task_type: str | None = None
    priority: int | None = None
    batch_id: str | None = None
    created_after: int | None = None

    def accepts(self, fields: dict[str, str]) -> bool:
        return (
            (self.status is None or fields.get("status") == self.status)
            and (self.task_type is None or fields.get("type") == self.task_type)
            and (self.priority is None or fields.get("prio") == str(self.priority))
            and (self.batch_id is None or fields.get("batch") == self.batch_id)
        )


def list_tasks(store: Store, org: Org, flt: TaskFilter, cursor: str | None, limit: int) -> dict[str, Any]:
    """GET /v1/async/tasks: this org's tasks, newest first, filtered, paged by an opaque cursor (the
    listing position to continue below; positions do not move when expired entries are trimmed)."""
    keys = [org.shard.org_tasks(org.id), org.shard.org(org.id)]
    upper: int | None = _cursor(cursor) if cursor else None
    tasks: list[dict[str, Any]] = []
    scanned, page = 0, 200
    while scanned < 50 * limit + 1000:
        reply = store.scripts["list_page"](keys=keys, args=["" if upper is None else upper, page])
        lo, ids = int(reply[0]), reply[1:]
        if not ids:
            return {"tasks": tasks, "nextCursor": None}
        pipe = store.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(org.shard.task(task_id), TASK_FIELDS)
        rows = list(zip(range(lo, lo + len(ids)), ids, map(task_fields, pipe.execute()), strict=True))
        for position, task_id, fields in reversed(rows):  # newest first
            scanned += 1
            upper = position
            if not fields:
                continue  # expired after its retention; the trimmer drops it from the head later
            if flt.created_after is not None and int(fields["created"]) <= flt.created_after:
                return {"tasks": tasks, "nextCursor": None}  # newest first: the rest is older
            if flt.accepts(fields):
                view = summary_view(TaskRecord.from_hash(task_id, fields))
                tasks.append(view | {"batchId": fields.get("batch") or None})
                if len(tasks) == limit:
                    return {"tasks": tasks, "nextCursor": str(position)}
    # a page cut short by the scan bound still hands back where to continue
    return {"tasks": tasks, "nextCursor": str(upper) if upper else None}
