"""Console actions: each a confirmed POST with the session's CSRF token, through the same core calls
as the API endpoints."""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from taskq import batches, deliveries, flow, lookup, scheduler
from taskq.admission import Accepted
from taskq.api import settings, store
from taskq.api.console import back, bp, checked_form
from taskq.errors import NotFound
from taskq.store import Org


def _owned_task(task_id: str) -> Org:
    found = lookup.find_task(store(), task_id)
    if found is None:
        raise NotFound(f"No task with id {task_id}", {"id": task_id})
    return found[0]


def _owned_batch(batch_id: str) -> Org:
    org = lookup.find_batch(store(), batch_id)
    if org is None:
        raise NotFound(f"No batch with id {batch_id}", {"id": batch_id})
    return org


@bp.post("/tasks/<task_id>/cancel")
def cancel_task(task_id: str) -> ResponseReturnValue:
    checked_form()
    org = _owned_task(task_id)
    verdict = scheduler.cancel_task(store(), org, task_id, retention=settings().retention_seconds)
    message = (
        "Task canceled"
        if verdict == "canceled"
        else "Cancel requested: the task stops at its next safe point"
    )
    return back("console.task", message, task_id=task_id)


@bp.post("/tasks/<task_id>/redeliver")
def redeliver(task_id: str) -> ResponseReturnValue:
    checked_form()
    org = _owned_task(task_id)
    delivery_id, _ = deliveries.redeliver(store(), org, task_id)
    return back("console.task", f"Webhook queued for redelivery ({delivery_id})", task_id=task_id)


@bp.post("/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> ResponseReturnValue:
    checked_form()
    org = _owned_batch(batch_id)
    done = batches.cancel_batch(store(), org, batch_id, retention=settings().retention_seconds)
    message = (
        f"{done.canceled} canceled, {done.cancel_requested} to stop at their next safe point, "
        f"{done.already_finished} already finished"
    )
    return back("console.batch", message, batch_id=batch_id)


@bp.post("/batches/<batch_id>/retry-failed")
def retry_failed(batch_id: str) -> ResponseReturnValue:
    checked_form()
    org = _owned_batch(batch_id)
    retried = batches.retry_failed(store(), settings(), org, batch_id)
    admitted = sum(1 for o in retried.outcomes if isinstance(o, Accepted))
    message = f"{admitted} of {len(retried.outcomes)} failed tasks submitted again in this new batch"
    return back("console.batch", message, batch_id=retried.batch_id)


@bp.post("/lanes/<provider>/pause")
def lane_pause(provider: str) -> ResponseReturnValue:
    checked_form()
    flow.pause(store(), provider, "paused from the console")
    return back("console.overview", f"{provider} paused: its tasks stay queued, calls in flight finish")


@bp.post("/lanes/<provider>/resume")
def lane_resume(provider: str) -> ResponseReturnValue:
    checked_form()
    flow.resume(store(), provider)
    return back("console.overview", f"{provider} resumed: pauses, exhausted quotas and refused keys cleared")
