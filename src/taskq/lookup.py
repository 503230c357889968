"""Operator lookups across organizations: a task or batch by id alone, and every org's tasks as one list.

The API answers one organization at a time (its key names it). The operator console sees them all: it
finds which organization owns an id by asking every shard, and pages through several organizations'
listings at once with one cursor that holds each listing's own cursor (``taskq.batches.list_tasks``),
so no task is skipped or repeated from page to page.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from taskq.batches import TaskFilter, list_tasks
from taskq.errors import ValidationFailed
from taskq.keys import TASK_FIELDS, Shard
from taskq.schemas.tasks import TaskRecord
from taskq.store import Org, Store, _is_uuid, task_fields

#: Cursor entry of an organization whose listing has no more tasks.
EXHAUSTED = "-"


def find_task(store: Store, task_id: str) -> tuple[Org, TaskRecord] | None:
    """The task with this id in whichever organization holds it."""
    if not _is_uuid(task_id):
        return None
    pipe = store.client.pipeline(transaction=False)
    for index in range(store.shards):
        pipe.hmget(Shard(index).task(task_id), TASK_FIELDS)
    for values in pipe.execute():
        fields = task_fields(values)
        if fields.get("org"):
            return store.org(fields["org"]), TaskRecord.from_hash(task_id, fields)
    return None


def find_batch(store: Store, batch_id: str) -> Org | None:
    """The organization that owns this batch."""
    if not _is_uuid(batch_id):
        return None
    pipe = store.client.pipeline(transaction=False)
    for index in range(store.shards):
        pipe.hget(Shard(index).batch(batch_id), "org")
    for org_id in pipe.execute():
        if org_id:
            return store.org(org_id)
    return None


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One line of the console's task list."""

    org: str
    view: dict[str, Any]  # summary_view plus batchId, as GET /v1/async/tasks returns it


@dataclass(frozen=True, slots=True)
class TaskPage:
    rows: list[TaskRow]
    next_cursor: str | None


def _decode(cursor: str | None) -> dict[str, str]:
    if not cursor:
        return {}
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return value
    except ValueError:
        pass
    raise ValidationFailed("Invalid cursor", [{"field": "cursor", "message": "must come from a next link"}])


def _encode(positions: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(positions, separators=(",", ":")).encode()).decode()


def list_all(store: Store, org_ids: list[str], flt: TaskFilter, cursor: str | None, limit: int) -> TaskPage:
    """Tasks of these organizations, newest first, filtered; a page of up to limit rows and the cursor
    of the next one. Each org's listing is read from its own cursor; the rows taken from an org end at
    a listing position that becomes its cursor for the next page."""
    positions = _decode(cursor)
    candidates: list[tuple[str, dict[str, Any]]] = []
    pages: dict[str, dict[str, Any]] = {}
    for org_id in org_ids:
        at = positions.get(org_id)
        if at == EXHAUSTED:
            continue
        pages[org_id] = list_tasks(store, store.org(org_id), flt, at, limit)
        candidates += [(org_id, view) for view in pages[org_id]["tasks"]]
    candidates.sort(key=lambda c: c[1]["createdAt"], reverse=True)
    taken = candidates[:limit]
    rows = [TaskRow(org_id, view) for org_id, view in taken]
    following = dict(positions)
    for org_id, page in pages.items():
        used = sum(1 for o, _ in taken if o == org_id)
        if used == len(page["tasks"]):
            following[org_id] = page["nextCursor"] or EXHAUSTED
        elif used:  # part of this org's page was shown: read exactly that part again for its cursor
            again = list_tasks(store, store.org(org_id), flt, positions.get(org_id), used)
            following[org_id] = again["nextCursor"] or EXHAUSTED
    more = any(following.get(o) != EXHAUSTED for o in org_ids)
    return TaskPage(rows, _encode(following) if more and following != positions else None)
