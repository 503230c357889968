"""Batch endpoints and the task listing: beyond the reference API, additive only."""

from __future__ import annotations

import json
from datetime import datetime

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue

from taskq import batches
from taskq.api import authenticate, settings, store
from taskq.api.tasks import result_item
from taskq.batches import STATUSES, TaskFilter, batch_results, batch_view, digits, list_tasks
from taskq.errors import ValidationFailed
from taskq.schemas.tasks import TaskType

bp = Blueprint("batches", __name__, url_prefix="/v1/async")

MAX_PAGE = 500


def _limit(default: int = 100) -> int:
    value = digits(request.args.get("limit", str(default)))
    if value is None or not 1 <= value <= MAX_PAGE:
        raise ValidationFailed(
            "Invalid limit", [{"field": "limit", "message": f"an integer from 1 to {MAX_PAGE}"}]
        )
    return value


@bp.get("/batch/<batch_id>")
def get_batch(batch_id: str) -> ResponseReturnValue:
    return batch_view(store(), authenticate(), batch_id)


@bp.get("/batch/<batch_id>/results")
def get_batch_results(batch_id: str) -> ResponseReturnValue:
    org = authenticate()
    page = batch_results(store(), org, batch_id, request.args.get("cursor"), _limit())
    body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in page.lines)
    response = Response(body, mimetype="application/x-ndjson")
    if page.next_cursor is not None:
        response.headers["X-Next-Cursor"] = page.next_cursor
    return response


def _task_filter() -> TaskFilter:
    args = request.args
    errors = []
    status = args.get("status")
    if status is not None and status not in STATUSES:
        errors.append({"field": "status", "message": ", ".join(STATUSES[:-1]) + " or " + STATUSES[-1]})
    task_type = args.get("taskType")
    if task_type is not None and task_type not in TaskType.__members__:
        errors.append({"field": "taskType", "message": "one of " + ", ".join(TaskType.__members__)})
    raw_priority = args.get("priority")
    priority = digits(raw_priority) if raw_priority is not None else None
    if raw_priority is not None and (priority is None or not 1 <= priority <= 10):
        errors.append({"field": "priority", "message": "an integer from 1 to 10"})
    created_after = None
    if args.get("createdAfter"):
        try:
            created_after = int(
                datetime.fromisoformat(args["createdAfter"].replace("Z", "+00:00")).timestamp() * 1000
            )
        except (ValueError, OverflowError):
            errors.append({"field": "createdAfter", "message": "an ISO-8601 date-time"})
    if errors:
        raise ValidationFailed("Invalid query parameters", errors)
    return TaskFilter(status, task_type, priority, args.get("batchId"), created_after)


@bp.post("/batch/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> ResponseReturnValue:
    """Cancel the rest of a batch: QUEUED tasks now, PROCESSING ones at their next safe point."""
    done = batches.cancel_batch(store(), authenticate(), batch_id, retention=settings().retention_seconds)
    return {
        "success": True,
        "batchId": batch_id,
        "canceled": done.canceled,
        "cancelRequested": done.cancel_requested,
        "alreadyFinished": done.already_finished,
    }


@bp.post("/batch/<batch_id>/retry-failed")
def retry_failed(batch_id: str) -> ResponseReturnValue:
    """Submit the FAILED tasks of a batch again, as a new batch (credits and queue limit apply)."""
    retried = batches.retry_failed(store(), settings(), authenticate(), batch_id)
    results = []
    for (source_index, source_id), outcome in zip(retried.sources, retried.outcomes, strict=True):
        results.append({**result_item(outcome), "sourceIndex": source_index, "sourceTaskId": source_id})
    succeeded = sum(1 for r in results if r["success"])
    return {
        "success": True,
        "batchId": retried.batch_id,
        "sourceBatchId": batch_id,
        "summary": {"total": len(results), "succeeded": succeeded, "failed": len(results) - succeeded},
        "results": results,
    }


@bp.get("/tasks")
def get_tasks() -> ResponseReturnValue:
    org = authenticate()
    flt = _task_filter()
    return list_tasks(store(), org, flt, request.args.get("cursor"), _limit(50))
