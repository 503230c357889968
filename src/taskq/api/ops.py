"""Operator endpoints: Prometheus /metrics and the live /dashboard (TASKQ_ADMIN_TOKEN)."""

from __future__ import annotations

import hmac
import json
import time
from importlib import resources
from typing import Any

from flask import Blueprint, Response, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from taskq import flow, keys, schedules
from taskq.api import settings, store
from taskq.errors import Code, TaskqError, Unauthorized
from taskq.metrics import RedisCollector, gauges, minute_series, totals

bp = Blueprint("ops", __name__)

HEARTBEAT_STALE_MS = 30_000


def require_admin() -> None:
    """Operator endpoints need TASKQ_ADMIN_TOKEN as a Bearer token (or ?token= for the browser page)."""
    token = settings().admin_token
    if token is None:
        raise TaskqError("Set TASKQ_ADMIN_TOKEN to enable operator endpoints", code=Code.FORBIDDEN)
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else request.args.get("token", "")
    if not given:
        raise Unauthorized("Missing admin token", code=Code.MISSING_API_KEY)
    if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise Unauthorized("Invalid admin token", code=Code.INVALID_OR_EXPIRED_API_KEY)


@bp.get("/metrics")
def metrics() -> Response:
    require_admin()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(store().client, store().shards))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _workers(client: Any) -> list[dict[str, Any]]:
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


def dashboard_data() -> dict[str, Any]:
    """Everything the dashboard shows, read from Redis."""
    client, shards = store().client, store().shards
    failures: list[dict[str, Any]] = []
    failing_endpoints: dict[str, int] = {}
    for index in range(shards):
        shard = keys.Shard(index)
        failures += [json.loads(x) for x in client.lrange(shard.failures, 0, 19)]
        for host, count in client.hgetall(shard.wh_failing).items():
            failing_endpoints[host] = failing_endpoints.get(host, 0) + int(count)
    series = minute_series(client, shards, 30)
    t = totals(client, shards)
    return {
        "at": int(time.time() * 1000),
        **gauges(client, shards),
        "series": series,
        "totals": {
            "admitted": t.get("admitted", 0),
            "completed": sum(v for k, v in t.items() if k.startswith("completed:")),
            "failed": sum(v for k, v in t.items() if k.startswith("failed:")),
            "retried": sum(v for k, v in t.items() if k.startswith("retried:")),
            "leaseExpired": t.get("lease_expired", 0),
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
def dashboard_json() -> Any:
    require_admin()
    return dashboard_data()


@bp.get("/dashboard")
def dashboard() -> Response:
    require_admin()
    page = resources.files("taskq").joinpath("api").joinpath("static").joinpath("dashboard.html").read_text()
    return Response(page, mimetype="text/html")
