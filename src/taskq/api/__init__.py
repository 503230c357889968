"""The intake's Flask app: every path but the synchronous monitor calls (create_app is the factory;
taskq.api.asgi serves it with the monitor calls)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from flask import Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider

from taskq import durability, keys
from taskq.api import errors
from taskq.connection import connect, resolve_url
from taskq.errors import RateLimited, Unconfirmed
from taskq.redistypes import Redis
from taskq.settings import Settings, load_settings
from taskq.store import Org, Store, header_digest


class FastJSON(DefaultJSONProvider):
    """Responses encoded with orjson (a 500-task batch answer is ~100 KB of JSON), keys in order."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj).decode()


def create_app(settings: Settings | None = None, *, client: Redis | None = None) -> Flask:
    """Build the intake app; tests pass settings and a client (fakeredis or a real Redis)."""
    settings = settings or load_settings()
    if client is None:
        url, _ = resolve_url(settings)
        # Every thread may hold a connection (a waiting synchronous call blocks on one): size the pool
        # past the thread count, or redis-py's default of 100 refuses the 101st.
        client = connect(
            url, cluster=settings.redis_cluster, threaded=True, max_connections=settings.intake_threads + 32
        )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = FastJSON(app)
    committer = durability.committer(client, settings)  # refuses a server that cannot give it
    app.extensions["taskq"] = {"settings": settings, "store": Store(client, settings.shards)}

    from taskq.api import (
        batches,
        console,
        health,
        monitor,
        openapi,
        ops,
        queue,
        reference,
        schedules,
        tasks,
        webhooks,
    )

    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(tasks.bp)
    app.register_blueprint(queue.bp)
    app.register_blueprint(batches.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(console.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(monitor.bp)
    app.register_blueprint(reference.bp)
    app.register_blueprint(schedules.bp)
    errors.install(app)

    @app.after_request
    def _headers(response: Response) -> Response:
        limit = g.get("rate_limit")
        if limit is not None:
            response.headers["X-RateLimit-Limit"] = str(limit[0])
            response.headers["X-RateLimit-Remaining"] = str(limit[1])
        return response

    if committer is not None:
        _confirm_answers(app, committer)  # registered last: runs before _headers, which marks its answer
    return app


def _confirm_answers(app: Flask, committer: durability.Committer) -> None:
    """TASKQ_DURABILITY: an organization's answer goes out once what it reports is durable: its own
    writes and everything it read (a task another process completed, credits). Else 503, outcome unknown."""

    @app.after_request
    def _durable(response: Response) -> Response:
        if g.get("org") is None or response.status_code >= 500:
            return response
        try:
            committer.confirm()
        except Unconfirmed as exc:
            app.logger.error("answer not confirmed durable: %s", exc.__cause__ or exc.message)
            return errors.failure(exc)
        return response


def settings() -> Settings:
    from flask import current_app

    value: Settings = current_app.extensions["taskq"]["settings"]
    return value


def store() -> Store:
    from flask import current_app

    value: Store = current_app.extensions["taskq"]["store"]
    return value


def authenticate() -> Org:
    """Resolve the caller's organization and count the request against its key's rate limit."""
    digest = header_digest(request.headers.get("Authorization"))
    limit = settings().rate_limit_per_second
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    key = keys.rate(digest[:24], f"{request.method}:{rule}", int(time.time()))
    org, count = store().resolve_key(digest, count_key=key)
    g.rate_limit = (limit, max(0, limit - count))
    if count > limit:
        raise RateLimited(f"Rate limit exceeded: {limit} requests per second per endpoint", {"limit": limit})
    g.org = org
    return org
