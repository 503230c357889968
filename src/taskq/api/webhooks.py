"""Webhook endpoints: a task's delivery history, and sending its webhook again."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from taskq import deliveries
from taskq.api import authenticate, store
from taskq.api.errors import HttpError

bp = Blueprint("webhooks", __name__, url_prefix="/v1/async")


@bp.get("/task/<task_id>/deliveries")
def list_deliveries(task_id: str) -> ResponseReturnValue:
    org = authenticate()
    return deliveries.history(store(), org, task_id)


@bp.post("/task/<task_id>/webhook/redeliver")
def redeliver(task_id: str) -> ResponseReturnValue:
    org = authenticate()
    try:
        delivery_id, event_id = deliveries.redeliver(store(), org, task_id)
    except deliveries.NotRedeliverable as exc:
        # The request is fine; the task's state does not allow it (yet): a conflict.
        raise HttpError(exc.code, exc.message, exc.details, status=409) from None
    return {"success": True, "deliveryId": delivery_id, "eventId": event_id}
