"""The HTTP status of every error code, and the error envelope every failure response uses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from taskq.errors import Code, TaskqError

STATUS: dict[Code, int] = {
    Code.VALIDATION_ERROR: 400,
    Code.MISSING_API_KEY: 401,
    Code.INVALID_API_KEY_FORMAT: 401,
    Code.INVALID_OR_EXPIRED_API_KEY: 401,
    Code.INSUFFICIENT_CREDITS: 403,
    Code.FORBIDDEN: 403,
    Code.RESOURCE_NOT_FOUND: 404,
    Code.METHOD_NOT_ALLOWED: 405,
    Code.RESOURCE_ALREADY_EXISTS: 409,
    Code.TASK_ALREADY_FINISHED: 409,
    Code.REQUEST_TIMEOUT: 408,
    Code.PAYLOAD_TOO_LARGE: 413,
    Code.UNSUPPORTED_MEDIA_TYPE: 415,
    Code.QUEUE_LIMIT_EXCEEDED: 429,
    Code.RATE_LIMIT_EXCEEDED: 429,
    Code.CONCURRENCY_LIMIT_EXCEEDED: 429,
    Code.REQUEST_CANCELED: 499,
    Code.INTERNAL_SERVER_ERROR: 500,
    Code.EXTERNAL_SERVICE_ERROR: 502,
    Code.SERVICE_UNAVAILABLE: 503,
}

WERKZEUG_CODES: dict[int, Code] = {
    400: Code.VALIDATION_ERROR,
    404: Code.RESOURCE_NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    413: Code.PAYLOAD_TOO_LARGE,
    415: Code.UNSUPPORTED_MEDIA_TYPE,
}


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    error["timestamp"] = timestamp()
    return {"success": False, "error": error}


def error_response(code: Code, message: str, details: Any = None, status: int | None = None) -> Response:
    response = jsonify(error_body(code.value, message, details))
    response.status_code = status or STATUS.get(code, 400)
    return response


class HttpError(TaskqError):
    """A request-level failure whose status differs from its code's usual one (batch 422)."""

    def __init__(self, code: Code, message: str, details: Any = None, *, status: int) -> None:
        super().__init__(message, details, code=code)
        self.status = status


def install(app: Flask) -> None:
    """Route every failure through the envelope: ours, werkzeug's, and unexpected ones."""

    @app.errorhandler(TaskqError)
    def _taskq(exc: TaskqError) -> Response:
        status = exc.status if isinstance(exc, HttpError) else None
        return error_response(exc.code, exc.message, exc.details, status)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = WERKZEUG_CODES.get(
            status, Code.VALIDATION_ERROR if status < 500 else Code.INTERNAL_SERVER_ERROR
        )
        message = {
            404: "Resource not found",
            405: "Method not allowed",
            413: "Request body too large",
        }.get(status, exc.description or exc.name)
        return error_response(code, message, status=status)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return error_response(Code.INTERNAL_SERVER_ERROR, "Internal server error", status=500)
