"""The HTTP status of every error (one table, keyed by exception class), what Redis failures answer,
and the error envelope every failure response uses."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from taskq import errors
from taskq.errors import Code, TaskqError

#: The status of each TaskqError class; every class in taskq.errors has a row (tests/test_errors.py).
STATUS: dict[type[TaskqError], int] = {
    errors.TaskqError: 500,
    errors.ValidationFailed: 400,
    errors.InvalidBatch: 422,
    errors.NothingToRetry: 422,
    errors.NotRedeliverable: 409,  # the request is fine; the task's state does not allow it (yet)
    errors.UnsafeTarget: 400,
    errors.AmbiguousOrg: 400,
    errors.Unauthorized: 401,
    errors.MissingApiKey: 401,
    errors.InvalidApiKeyFormat: 401,
    errors.Forbidden: 403,
    errors.InsufficientCredits: 403,
    errors.NotFound: 404,
    errors.MethodNotAllowed: 405,
    errors.RequestTimeout: 408,
    errors.AlreadyExists: 409,
    errors.TaskAlreadyFinished: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.QueueLimitExceeded: 429,
    errors.RateLimited: 429,
    errors.ConcurrencyLimitExceeded: 429,
    errors.RequestCanceled: 499,
    errors.CallFailed: 500,
    errors.ExternalServiceError: 502,
    errors.Unconfirmed: 503,
    errors.NoRedis: 503,
}

#: The error class whose code answers a werkzeug HTTPException of each status (the status stays werkzeug's).
WERKZEUG: dict[int, type[TaskqError]] = {
    400: errors.ValidationFailed,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}

#: Redis refusing work for now (memory, failover, loading, a long script, permissions, lost scripts):
#: answered 503, like an unreachable Redis. redis-py turns some of these into classes of their own
#: (their message then lacks the prefix), the others keep it.
REDIS_REFUSALS = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.NoPermissionError,
    redis.exceptions.NoScriptError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,
    redis.exceptions.MovedError,
)
REFUSAL_PREFIXES = ("OOM", "BUSY", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "LOADING",
                    "NOREPLICAS", "MISCONF", "NOPERM", "NOSCRIPT", "MOVED", "ASK")  # fmt: skip


def status_of(exc: TaskqError) -> int:
    """The HTTP status of an error: the row of its class, or of its nearest ancestor with one."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500  # pragma: no cover - TaskqError itself has a row


def redis_bug(exc: redis.RedisError) -> bool:
    """An error answer from Redis that is not Redis refusing work: a failing taskq script or damaged
    data, answered 500. Anything else (unreachable, timed out, refusing) is 503."""
    return (
        isinstance(exc, redis.ResponseError)
        and not isinstance(exc, REDIS_REFUSALS)
        and not str(exc).startswith(REFUSAL_PREFIXES)
    )


def redis_status(exc: redis.RedisError) -> tuple[Code, int]:
    """What a Redis failure answers: 500 for a taskq bug, 503 for Redis unavailable or refusing."""
    if redis_bug(exc):
        return Code.INTERNAL_SERVER_ERROR, 500
    return Code.SERVICE_UNAVAILABLE, 503


def redis_answer(exc: redis.RedisError, log: logging.Logger) -> tuple[int, dict[str, Any]]:
    """The status and envelope a Redis failure answers, logged: 500 for a taskq bug (with its
    traceback), 503 for Redis unavailable or refusing."""
    code, status = redis_status(exc)
    if status == 500:
        log.exception("redis answered with an error")
        return status, error_body(code.value, "Internal server error")
    log.error("redis unavailable: %s", exc)
    return status, error_body(code.value, "Service temporarily unavailable")


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    error["timestamp"] = timestamp()
    return {"success": False, "error": error}


def error_response(code: Code, message: str, details: Any = None, *, status: int) -> Response:
    response = jsonify(error_body(code.value, message, details))
    response.status_code = status
    return response


def failure(exc: TaskqError) -> Response:
    """The envelope and status of a TaskqError."""
    return error_response(exc.code, exc.message, exc.details, status=status_of(exc))


def install(app: Flask) -> None:
    """Route every failure through the envelope: ours, Redis's, werkzeug's, and unexpected ones."""

    @app.errorhandler(TaskqError)
    def _taskq(exc: TaskqError) -> Response:
        return failure(exc)

    @app.errorhandler(redis.RedisError)
    def _redis_error(exc: redis.RedisError) -> Response:
        status, body = redis_answer(exc, app.logger)
        response = jsonify(body)
        response.status_code = status
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        cls = WERKZEUG.get(status, errors.ValidationFailed if status < 500 else errors.TaskqError)
        message = {
            404: "Resource not found",
            405: "Method not allowed",
            413: "Request body too large",
        }.get(status, exc.description or exc.name)
        return error_response(cls.code, message, status=status)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return error_response(Code.INTERNAL_SERVER_ERROR, "Internal server error", status=500)
