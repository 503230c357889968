"""Schedule endpoints: recurring batches as a resource (taskq's addition)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from flask.typing import ResponseReturnValue

from taskq import schedules
from taskq.admission import WebhookCheck
from taskq.api import authenticate, settings, store
from taskq.api.tasks import _webhook_check, read_json

bp = Blueprint("schedules", __name__, url_prefix="/v1/async/schedules")


def _check(body: Any) -> WebhookCheck:
    """Webhook targets of the schedule's tasks and its batch webhook, checked as the batch endpoint does."""
    tasks = body.get("tasks") if isinstance(body, dict) else None
    hook = body.get("batchWebhook") if isinstance(body, dict) else None
    url = hook.get("url") if isinstance(hook, dict) else hook
    return _webhook_check(tasks if isinstance(tasks, list) else [], url if isinstance(url, str) else "")


@bp.post("")
def create_schedule() -> ResponseReturnValue:
    org = authenticate()
    body = read_json()
    return {"success": True, "schedule": schedules.create(store(), settings(), org, body, _check(body))}


@bp.get("")
def list_schedules() -> ResponseReturnValue:
    return {"success": True, "schedules": schedules.list_for(store(), authenticate())}


@bp.get("/<schedule_id>")
def get_schedule(schedule_id: str) -> ResponseReturnValue:
    return {"success": True, "schedule": schedules.get(store(), authenticate(), schedule_id)}


@bp.patch("/<schedule_id>")
def update_schedule(schedule_id: str) -> ResponseReturnValue:
    org = authenticate()
    body = read_json()
    view = schedules.update(store(), settings(), org, schedule_id, body, _check(body))
    return {"success": True, "schedule": view}


@bp.delete("/<schedule_id>")
def delete_schedule(schedule_id: str) -> ResponseReturnValue:
    schedules.delete(store(), authenticate(), schedule_id)
    return {"success": True, "id": schedule_id, "deleted": True}
