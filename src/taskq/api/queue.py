"""Organization endpoints: queue status, clearing the queue, credits."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from taskq.api import authenticate, settings, store
from taskq.scheduler import clear_queue

bp = Blueprint("queue", __name__, url_prefix="/v1")


@bp.get("/async/status")
def status() -> Any:
    return store().status(authenticate())


@bp.delete("/async/queue")
def clear() -> Any:
    org = authenticate()
    return {"success": True, "cleared": clear_queue(store(), org, retention=settings().retention_seconds)}


@bp.get("/credits")
def credits() -> Any:
    return store().credits(authenticate())
