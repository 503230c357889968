"""Operator endpoints: Prometheus /metrics, the dashboard's figures, and operator sign-in (TASKQ_ADMIN_TOKEN).

An operator proves the admin token once (``/dashboard?token=…`` or the sign-in form) and gets a signed
session cookie (HttpOnly, SameSite=Strict) carrying a CSRF token that every console form posts back.
Scripts keep sending the token as a Bearer header; /metrics and the JSON endpoints accept both.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeTimedSerializer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from werkzeug.wrappers import Response as BaseResponse

from taskq import flow, keys, schedules
from taskq.api import settings, store
from taskq.errors import Forbidden, MissingApiKey, Unauthorized
from taskq.metrics import RedisCollector, gauges, minute_series, totals
from taskq.redistypes import Redis

bp = Blueprint("ops", __name__)

HEARTBEAT_STALE_MS = 30_000
SESSION_COOKIE = "taskq_console"
SESSION_SECONDS = 12 * 3600
CHART_MINUTES = 30


# Operator authentication --------------------------------------------------------------------------
def admin_token() -> str:
    token = settings().admin_token
    if token is None:
        raise Forbidden("Set TASKQ_ADMIN_TOKEN to enable operator endpoints")
    return token.get_secret_value()


def token_matches(given: str) -> bool:
    return hmac.compare_digest(given.encode(), admin_token().encode())


def _signer() -> URLSafeTimedSerializer:
    # Keyed by the admin token: changing the token signs every operator out.
    secret = hmac.new(admin_token().encode(), b"taskq console session", hashlib.sha256).hexdigest()
    return URLSafeTimedSerializer(secret, salt="taskq-console")


def new_session() -> tuple[str, str]:
    """A session cookie value and the CSRF token it carries."""
    csrf = secrets.token_urlsafe(24)
    return _signer().dumps({"csrf": csrf}), csrf


def set_session_cookie(response: BaseResponse, value: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/",
    )


def session_csrf() -> str | None:
    """The CSRF token of the request's valid session cookie, or None when there is none."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data = _signer().loads(raw, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    csrf = data.get("csrf") if isinstance(data, dict) else None
    return csrf if isinstance(csrf, str) else None


def require_admin() -> None:
    """The admin token as a Bearer header (or ?token=), or a signed session cookie."""
    admin_token()
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else request.args.get("token", "")
    if not given:
        if session_csrf() is not None:
            return
        raise MissingApiKey("Missing admin token: send Authorization: Bearer <token>")
    if not token_matches(given):
        raise Unauthorized("Invalid admin token")


# Figures ------------------------------------------------------------------------------------------
@bp.get("/metrics")
def metrics() -> Response:
    require_admin()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(store().client, store().shards))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _workers(client: Redis) -> list[dict[str, Any]]:
    """Worker processes from their heartbeats; entries silent for long are forgotten."""
    now = int(time.time() * 1000)
    rows = []
    for name, raw in sorted(client.hgetall(keys.WORKERS).items()):
        info = json.loads(raw)
        age = now - int(info.get("heartbeat", 0))
        if age > 10 * HEARTBEAT_STALE_MS:  # long gone: forget it
            client.hdel(keys.WORKERS, name)
            continue
        rows.append({"name": name, **info, "heartbeatAgeMs": age, "alive": age <= HEARTBEAT_STALE_MS})
    return rows


def recent_rate(series: list[dict[str, int]], field: str, now: float) -> float:
    """Events per minute over the last 60 s from minute buckets (series ends with the current, unfinished
    minute): this minute so far plus the share of the previous minute still inside the window."""
    if not series:
        return 0.0
    elapsed = (now % 60) / 60
    previous = series[-2][field] if len(series) > 1 else 0
    return series[-1][field] + previous * (1 - elapsed)


def dashboard_data() -> dict[str, Any]:
    """Everything the dashboard shows, read from Redis. ``series`` ends with the current minute, which
    is still filling: ``recent`` gives per-minute rates over the last 60 s instead."""
    client, shards = store().client, store().shards
    failures: list[dict[str, Any]] = []
    failing_endpoints: dict[str, int] = {}
    for index in range(shards):
        shard = keys.Shard(index)
        failures += [json.loads(x) for x in client.lrange(shard.failures, 0, 19)]
        for host, count in client.hgetall(shard.wh_failing).items():
            failing_endpoints[host] = failing_endpoints.get(host, 0) + int(count)
    now = time.time()
    series = minute_series(client, shards, CHART_MINUTES + 1)
    t = totals(client, shards)
    return {
        "at": int(now * 1000),
        **gauges(client, shards),
        "series": series,
        "recent": {
            name: round(recent_rate(series, name, now), 1) for name in ("admitted", "completed", "failed")
        },
        "totals": {
            "admitted": t.get("admitted", 0),
            "completed": sum(v for k, v in t.items() if k.startswith("completed:")),
            "failed": sum(v for k, v in t.items() if k.startswith("failed:")),
            "retried": sum(v for k, v in t.items() if k.startswith("retried:")),
            "leaseExpired": t.get("lease_expired", 0),
            "syncUncollected": t.get("sync_uncollected", 0),
        },
        "recentFailures": sorted(failures, key=lambda f: f.get("at", 0), reverse=True)[:20],
        "failingEndpoints": [
            {"endpoint": host, "failures": count}
            for host, count in sorted(failing_endpoints.items(), key=lambda item: -item[1])[:10]
        ],
        "workers": _workers(client),
        "schedules": schedules.overview(store()),
        "lanes": flow.status(store()),  # provider flow control per key (taskq.flow)
    }


@bp.get("/dashboard/data")
def dashboard_json() -> ResponseReturnValue:
    require_admin()
    return dashboard_data()
