"""Webhook endpoints: a task's delivery history, and sending its webhook again."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from taskq import deliveries
from taskq.api import authenticate, store

bp = Blueprint("webhooks", __name__, url_prefix="/v1/async")


@bp.get("/task/<task_id>/deliveries")
def list_deliveries(task_id: str) -> ResponseReturnValue:
    org = authenticate()
    return deliveries.history(store(), org, task_id)


@bp.post("/task/<task_id>/webhook/redeliver")
def redeliver(task_id: str) -> ResponseReturnValue:
    org = authenticate()
    delivery_id, event_id = deliveries.redeliver(store(), org, task_id)  # NotRedeliverable: 409
    return {"success": True, "deliveryId": delivery_id, "eventId": event_id}
