"""The intake as one ASGI app: synchronous monitor calls served on the event loop, every other request
handed to the Flask app on a few threads; request ids, latency and body limits for all of them.

A monitor call spends almost all its time waiting for a worker: on the loop that wait costs a future
(no thread, no connection), and the request path around it is a few hundred lines of plain asyncio:
no Flask, no thread hand-offs, admissions and charges pipelined with those of the other calls of the
moment (``taskq.calls``). Everything else (async tasks, batches, goto, the console, operations) is the
Flask app behind a WSGI bridge (``a2wsgi``), whose threads never wait for a slow client: the body is
read here first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from a2wsgi import WSGIMiddleware
from flask import Flask
from redis.exceptions import RedisError

from taskq import durability, keys
from taskq.api import create_app
from taskq.api.errors import error_body, redis_answer, status_of
from taskq.api.monitor import PATHS, failure, parse_payload
from taskq.api.tasks import parse_json
from taskq.calls import Admitted, Calls, Outcome, Refused, Slots, check, quick_uuid
from taskq.connection import async_connect, connect, resolve_url
from taskq.errors import (
    Code,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    TaskqError,
    UnsupportedMediaType,
    ValidationFailed,
)
from taskq.redistypes import Redis
from taskq.schemas.tasks import TaskType
from taskq.settings import Settings, load_settings
from taskq.store import Org, Store, header_digest

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("taskq.api")

#: The monitor call paths, served on the loop: path -> task type.
MONITOR = {f"/v1/monitor/{path}": task_type for path, task_type in PATHS.items()}

JSON = (b"content-type", b"application/json")

#: Redis connections of the loop's client besides the inbox readers': its round trips are pipelines
#: shared by the calls of a moment, so a few suffice.
LOOP_CONNECTIONS = 16


class ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


class Answer:
    """A response being built: status, JSON body, extra headers."""

    __slots__ = ("body", "close", "headers", "status")

    def __init__(self) -> None:
        self.status = 200
        self.body = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.close = False

    def header(self, name: str, value: object) -> None:
        self.headers.append((name.encode(), str(value).encode()))

    def error(self, exc: TaskqError) -> None:
        self.status = status_of(exc)
        self.body = orjson.dumps(error_body(exc.code.value, exc.message, exc.details))

    async def send(self, send: Send) -> None:
        headers = [JSON, (b"content-length", str(len(self.body)).encode()), *self.headers]
        if self.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class Intake:
    """The ASGI app (``create_asgi`` builds it). The loop's Redis client, the calls' inbox and the
    durability committer are made at the first monitor call, on the loop that serves it."""

    def __init__(self, settings: Settings, flask: Flask, url: str) -> None:
        self.settings = settings
        self.flask = flask
        self.store: Store = flask.extensions["taskq"]["store"]
        self.bridge = WSGIMiddleware(flask, workers=settings.intake_threads)  # type: ignore[arg-type]
        self._url = url
        self._calls: Calls | None = None
        self._committer: durability.AsyncCommitter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request_id = _header(scope, b"x-request-id") or quick_uuid()

        async def stamped(message: Message) -> None:
            """X-Request-ID (echoed when the client sent one) and X-Latency-Ms on every response."""
            if message["type"] == "http.response.start":
                latency = int((time.perf_counter() - started) * 1000)
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                    (b"x-latency-ms", str(latency).encode()),
                ]
            await send(message)

        try:
            body = await self._read_body(scope, receive)
        except ClientGone:
            return
        except TaskqError as exc:  # too large, too slow: the rest of the body is not read
            answer = Answer()
            answer.error(exc)
            answer.close = True
            await answer.send(stamped)
            return
        task_type = MONITOR.get(scope["path"])
        if task_type is None:
            await self.bridge(scope, _replay(body, receive), stamped)  # type: ignore[arg-type]
            return
        answer = Answer()
        if scope["method"] != "POST":
            answer.error(MethodNotAllowed("Method not allowed"))
            answer.header("Allow", "POST")
        else:
            await self._monitor(scope, body, receive, task_type, answer)
        await answer.send(stamped)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._calls is not None:
                    await self._calls.aclose()
                    await self._calls.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body: 413 past TASKQ_MAX_BODY_BYTES, 408 when it takes longer than
        TASKQ_BODY_READ_TIMEOUT_SECONDS (a slow client holds nothing but this coroutine meanwhile)."""
        limit = self.settings.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge("Request body too large", {"max": limit})
        chunks: list[bytes] = []
        total = 0
        timeout = self.settings.body_read_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    chunk = message.get("body", b"")
                    total += len(chunk)
                    if total > limit:
                        raise PayloadTooLarge("Request body too large", {"max": limit})
                    if chunk:
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise RequestTimeout(f"Request body not received within {timeout:g} s") from None

    # Monitor calls ---------------------------------------------------------------------------------
    def calls(self) -> Calls:
        """This process's calls, their Redis client and committer (made on the loop that serves them)."""
        if self._calls is None:
            # One connection per shard's inbox reader (blocked in BLPOP), a few for the shared pipelines.
            client = async_connect(
                self._url,
                cluster=self.settings.redis_cluster,
                max_connections=self.settings.shards + LOOP_CONNECTIONS,
            )
            self._calls = Calls(client, self.settings)
            policy = durability.Policy.of(self.settings)
            if policy is not None:
                self._committer = durability.AsyncCommitter(client, policy)
        return self._calls

    async def _monitor(
        self, scope: Scope, body: bytes, receive: Receive, task_type: TaskType, answer: Answer
    ) -> None:
        """One call: authenticate, validate, admit, wait, answer; every failure as its envelope."""
        org: Org | None = None
        try:
            org = await self._authenticate(scope, answer)
            if not _is_json(_header(scope, b"content-type")):
                raise UnsupportedMediaType("Content-Type must be application/json")
            task = parse_payload(task_type, parse_json(body))
            problems = check(task, self.settings)
            if problems:
                raise ValidationFailed("Request validation failed", [e.to_json() for e in problems])
            await self._call(org, task, receive, answer)
        except TaskqError as exc:
            answer.error(exc)
        except RedisError as exc:
            status, envelope = redis_answer(exc, log)
            answer.status, answer.body = status, orjson.dumps(envelope)
        except Exception:
            log.exception("unhandled error")
            answer.status = 500
            answer.body = orjson.dumps(error_body(Code.INTERNAL_SERVER_ERROR.value, "Internal server error"))
        if org is not None and answer.status < 500 and self._committer is not None:
            try:
                await self._committer.confirm()
            except TaskqError as exc:
                log.error("answer not confirmed durable: %s", exc.__cause__ or exc.message)
                answer.error(exc)

    async def _authenticate(self, scope: Scope, answer: Answer) -> Org:
        """The caller's organization, counting the request against its key's rate limit (the same keys
        and reading as ``taskq.api.authenticate``)."""
        digest = header_digest(_header(scope, b"authorization"))
        limit = self.settings.rate_limit_per_second
        count_key = keys.rate(digest[:24], f"POST:{scope['path']}", int(time.time()))
        org, count = self.store.key_found(await self.calls().lookups.replies(digest, count_key), digest)
        answer.header("X-RateLimit-Limit", limit)
        answer.header("X-RateLimit-Remaining", max(0, limit - count))
        if count > limit:
            raise RateLimited(
                f"Rate limit exceeded: {limit} requests per second per endpoint", {"limit": limit}
            )
        return org

    async def _call(self, org: Org, task: Any, receive: Receive, answer: Answer) -> None:
        calls = self.calls()
        admitted = await calls.admit(org, task)
        _slots(answer, admitted.slots)
        if isinstance(admitted, Refused):
            raise admitted.error
        done = await self._outcome(calls, org, admitted, receive)
        if done.status != "COMPLETED":
            raise failure(done, self.settings.sync_timeout_seconds)
        answer.header("X-Credits-Charged", admitted.cost)
        answer.header("X-Credits-Remaining", admitted.credits_left)
        answer.body = b'{"success":true,"result":' + done.body.encode() + b"}"

    async def _outcome(self, calls: Calls, org: Org, admitted: Admitted, receive: Receive) -> Outcome:
        """The call's outcome, watching for the client to leave meanwhile (499)."""
        hangup = asyncio.ensure_future(_disconnect(receive))
        try:
            return await calls.outcome(org, admitted.task_id, hangup)
        finally:
            hangup.cancel()


def _slots(answer: Answer, slots: Slots) -> None:
    """Concurrency headers once validation passed (cloro-api.md §10)."""
    answer.header("X-Concurrency-Limit", slots.limit)
    answer.header("X-Concurrency-Current", slots.current)
    answer.header("X-Concurrency-Remaining", slots.remaining)


async def _disconnect(receive: Receive) -> None:
    """Return when the client closes the connection."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then what the connection says next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _is_json(content_type: str | None) -> bool:
    """application/json or application/*+json (what Flask's ``request.is_json`` accepts)."""
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def create_asgi(
    settings: Settings | None = None, *, client: Redis | None = None, url: str | None = None
) -> Intake:
    """Build the intake: the Flask app and the loop's side; tests pass settings, a client and its url."""
    settings = settings or load_settings()
    if client is None or url is None:
        url, _ = resolve_url(settings)
        # Every bridge thread may hold a connection: size the pool past the thread count.
        client = connect(
            url, cluster=settings.redis_cluster, threaded=True, max_connections=settings.intake_threads + 32
        )
    return Intake(settings, create_app(settings, client=client), url)
