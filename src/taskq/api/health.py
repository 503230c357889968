"""Liveness and readiness probes."""

from __future__ import annotations

import redis
from flask import Blueprint
from flask.typing import ResponseReturnValue

from taskq.api import store
from taskq.api.errors import error_response
from taskq.errors import Code

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    try:
        store().client.ping()
        scripts = store().scripts.load_all()
    except redis.RedisError as exc:
        return error_response(Code.SERVICE_UNAVAILABLE, f"Redis unreachable: {exc}", status=503)
    return {"status": "ready", "redis": "ok", "scripts": scripts}
