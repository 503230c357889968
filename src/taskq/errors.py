"""Error codes and the TaskqError tree; the HTTP status of each code lives in the API layer.

TaskqError                      (code)
├── ValidationFailed            VALIDATION_ERROR
├── NotFound                    RESOURCE_NOT_FOUND
├── AlreadyExists               RESOURCE_ALREADY_EXISTS
├── InsufficientCredits         INSUFFICIENT_CREDITS
├── QueueLimitExceeded          QUEUE_LIMIT_EXCEEDED
├── RateLimited                 RATE_LIMIT_EXCEEDED
├── ConcurrencyLimitExceeded    CONCURRENCY_LIMIT_EXCEEDED
├── RequestCanceled             REQUEST_CANCELED
├── ExternalServiceError        EXTERNAL_SERVICE_ERROR
├── Unauthorized                MISSING_API_KEY / INVALID_API_KEY_FORMAT / INVALID_OR_EXPIRED_API_KEY
└── Unconfirmed                 SERVICE_UNAVAILABLE (a write not confirmed durable in time)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Code(StrEnum):
    """Every stable error code taskq returns: in HTTP error envelopes and in FAILED task responses."""

    # Request errors
    VALIDATION_ERROR = "VALIDATION_ERROR"
    MISSING_API_KEY = "MISSING_API_KEY"
    INVALID_API_KEY_FORMAT = "INVALID_API_KEY_FORMAT"
    INVALID_OR_EXPIRED_API_KEY = "INVALID_OR_EXPIRED_API_KEY"
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
    QUEUE_LIMIT_EXCEEDED = "QUEUE_LIMIT_EXCEEDED"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    FORBIDDEN = "FORBIDDEN"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    TASK_ALREADY_FINISHED = "TASK_ALREADY_FINISHED"
    CONCURRENCY_LIMIT_EXCEEDED = "CONCURRENCY_LIMIT_EXCEEDED"  # a synchronous call over the org's limit
    REQUEST_CANCELED = "REQUEST_CANCELED"  # the client of a synchronous call went away
    EXTERNAL_SERVICE_ERROR = "EXTERNAL_SERVICE_ERROR"  # the goto resolver's upstream failed

    # Why a task FAILED (response.error.code)
    PROVIDER_REJECTED = "PROVIDER_REJECTED"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_TIMEOUT = "PROVIDER_TIMEOUT"
    PROVIDER_RATE_LIMITED = "PROVIDER_RATE_LIMITED"
    PROVIDER_QUOTA_EXHAUSTED = "PROVIDER_QUOTA_EXHAUSTED"
    PROVIDER_AUTH_FAILED = "PROVIDER_AUTH_FAILED"
    PROVIDER_INVALID_RESPONSE = "PROVIDER_INVALID_RESPONSE"
    PROVIDER_NOT_CONFIGURED = "PROVIDER_NOT_CONFIGURED"
    MAX_ATTEMPTS_EXCEEDED = "MAX_ATTEMPTS_EXCEEDED"
    WORKER_LOST = "WORKER_LOST"
    TASK_CANCELED = "TASK_CANCELED"
    WORKER_ERROR = "WORKER_ERROR"  # a bug in the worker itself; the task fails instead of hanging
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"  # a synchronous call found no attempt to start in time


class TaskqError(Exception):
    """Base of every deliberate failure; carries a stable code and optional details."""

    code: Code = Code.INTERNAL_SERVER_ERROR

    def __init__(self, message: str, details: Any = None, *, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code


class ValidationFailed(TaskqError):
    """Raised when a request or a task does not match its schema."""

    code = Code.VALIDATION_ERROR


class NotFound(TaskqError):
    """Raised when a resource does not exist or belongs to another organization."""

    code = Code.RESOURCE_NOT_FOUND


class AlreadyExists(TaskqError):
    """Raised when an idempotency key was already used."""

    code = Code.RESOURCE_ALREADY_EXISTS


class InsufficientCredits(TaskqError):
    """Raised when the balance does not cover a task's credits."""

    code = Code.INSUFFICIENT_CREDITS


class QueueLimitExceeded(TaskqError):
    """Raised when a batch would take an organization past its queue limit."""

    code = Code.QUEUE_LIMIT_EXCEEDED


class RateLimited(TaskqError):
    """Raised when an API key exceeds its request rate."""

    code = Code.RATE_LIMIT_EXCEEDED


class ConcurrencyLimitExceeded(TaskqError):
    """Raised when a synchronous call would take an organization past its concurrency limit."""

    code = Code.CONCURRENCY_LIMIT_EXCEEDED


class RequestCanceled(TaskqError):
    """Raised when the client of a synchronous call disconnected before its answer."""

    code = Code.REQUEST_CANCELED


class ExternalServiceError(TaskqError):
    """Raised when a service taskq calls on the client's behalf (the goto resolver) fails."""

    code = Code.EXTERNAL_SERVICE_ERROR


class Unauthorized(TaskqError):
    """Raised when the API key is missing, malformed, unknown or revoked."""

    code = Code.INVALID_OR_EXPIRED_API_KEY


class Unconfirmed(TaskqError):
    """Raised when a write could not be confirmed durable in time (TASKQ_DURABILITY): outcome unknown."""

    code = Code.SERVICE_UNAVAILABLE
