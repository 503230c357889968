"""Organization endpoints: queue status, clearing the queue, credits."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from taskq.api import authenticate, settings, store
from taskq.scheduler import clear_queue

bp = Blueprint("queue", __name__, url_prefix="/v1")


@bp.get("/async/status")
def status() -> ResponseReturnValue:
    return store().status(authenticate())


@bp.delete("/async/queue")
def clear() -> ResponseReturnValue:
    org = authenticate()
    return {"success": True, "cleared": clear_queue(store(), org, retention=settings().retention_seconds)}


@bp.get("/credits")
def credits() -> ResponseReturnValue:
    return store().credits(authenticate())
