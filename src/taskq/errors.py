"""Error codes and the TaskqError tree; the HTTP status of each class lives in the API layer
(taskq.api.errors.STATUS).

TaskqError                          (code)
├── ValidationFailed                VALIDATION_ERROR
│   ├── InvalidBatch                VALIDATION_ERROR (a batch request refused as a whole)
│   ├── NothingToRetry              VALIDATION_ERROR
│   ├── NotRedeliverable            VALIDATION_ERROR
│   ├── UnsafeTarget                VALIDATION_ERROR
│   └── AmbiguousOrg                VALIDATION_ERROR
├── Unauthorized                    INVALID_OR_EXPIRED_API_KEY
│   ├── MissingApiKey               MISSING_API_KEY
│   └── InvalidApiKeyFormat         INVALID_API_KEY_FORMAT
├── Forbidden                       FORBIDDEN
├── InsufficientCredits             INSUFFICIENT_CREDITS
├── NotFound                        RESOURCE_NOT_FOUND
├── MethodNotAllowed                METHOD_NOT_ALLOWED
├── RequestTimeout                  REQUEST_TIMEOUT
├── AlreadyExists                   RESOURCE_ALREADY_EXISTS
├── TaskAlreadyFinished             TASK_ALREADY_FINISHED
├── PayloadTooLarge                 PAYLOAD_TOO_LARGE
├── UnsupportedMediaType            UNSUPPORTED_MEDIA_TYPE
├── QueueLimitExceeded              QUEUE_LIMIT_EXCEEDED
├── RateLimited                     RATE_LIMIT_EXCEEDED
├── ConcurrencyLimitExceeded        CONCURRENCY_LIMIT_EXCEEDED
├── RequestCanceled                 REQUEST_CANCELED
├── CallFailed                      INTERNAL_SERVER_ERROR
├── ExternalServiceError            EXTERNAL_SERVICE_ERROR
├── Unconfirmed                     SERVICE_UNAVAILABLE (a write not confirmed durable in time)
└── NoRedis                         SERVICE_UNAVAILABLE (the command line found no Redis to use)

The codes in TASK_FAILURES are never raised: they say why a task FAILED (response.error.code).
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


#: The codes that only say why a task FAILED; every other code is raised as a TaskqError subclass.
TASK_FAILURES = frozenset(
    {
        Code.PROVIDER_REJECTED,
        Code.PROVIDER_UNAVAILABLE,
        Code.PROVIDER_TIMEOUT,
        Code.PROVIDER_RATE_LIMITED,
        Code.PROVIDER_QUOTA_EXHAUSTED,
        Code.PROVIDER_AUTH_FAILED,
        Code.PROVIDER_INVALID_RESPONSE,
        Code.PROVIDER_NOT_CONFIGURED,
        Code.MAX_ATTEMPTS_EXCEEDED,
        Code.WORKER_LOST,
        Code.TASK_CANCELED,
        Code.WORKER_ERROR,
        Code.DEADLINE_EXCEEDED,
    }
)


class TaskqError(Exception):
    """Base of every deliberate failure; carries a stable code and optional details."""

    code: Code = Code.INTERNAL_SERVER_ERROR

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(TaskqError):
    """Raised when a request or a task does not match its schema."""

    code = Code.VALIDATION_ERROR


class InvalidBatch(ValidationFailed):
    """Raised when a batch request is refused as a whole: not an array, too many tasks, bad batch webhook."""


class NothingToRetry(ValidationFailed):
    """Raised when a batch has no FAILED task to submit again."""


class NotRedeliverable(ValidationFailed):
    """Raised when a task's webhook cannot be sent again: not finished, no url, or too many tries."""


class UnsafeTarget(ValidationFailed):
    """Raised for a webhook URL the service refuses to call; the message says why."""


class AmbiguousOrg(ValidationFailed):
    """Raised when an organization is named by a name that several organizations share."""


class Unauthorized(TaskqError):
    """Raised when the API key (or the admin token) is unknown or revoked."""

    code = Code.INVALID_OR_EXPIRED_API_KEY


class MissingApiKey(Unauthorized):
    """Raised when the Authorization header (or the admin token) is missing or has no Bearer scheme."""

    code = Code.MISSING_API_KEY


class InvalidApiKeyFormat(Unauthorized):
    """Raised when the API key is not sk_live_ followed by 32 hex characters."""

    code = Code.INVALID_API_KEY_FORMAT


class Forbidden(TaskqError):
    """Raised when an operator action is not allowed: no admin token configured, or a wrong CSRF token."""

    code = Code.FORBIDDEN


class InsufficientCredits(TaskqError):
    """Raised when the balance does not cover a task's credits."""

    code = Code.INSUFFICIENT_CREDITS


class NotFound(TaskqError):
    """Raised when a resource does not exist or belongs to another organization."""

    code = Code.RESOURCE_NOT_FOUND


class MethodNotAllowed(TaskqError):
    """Raised when a path does not serve the request's method."""

    code = Code.METHOD_NOT_ALLOWED


class RequestTimeout(TaskqError):
    """Raised when a request body does not arrive in time."""

    code = Code.REQUEST_TIMEOUT


class AlreadyExists(TaskqError):
    """Raised when an idempotency key or a batch id was already used."""

    code = Code.RESOURCE_ALREADY_EXISTS


class TaskAlreadyFinished(TaskqError):
    """Raised when a finished task is asked to cancel."""

    code = Code.TASK_ALREADY_FINISHED


class PayloadTooLarge(TaskqError):
    """Raised when a request body is larger than TASKQ_MAX_BODY_BYTES."""

    code = Code.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(TaskqError):
    """Raised when a request body is not application/json."""

    code = Code.UNSUPPORTED_MEDIA_TYPE


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


class CallFailed(TaskqError):
    """Raised when a synchronous call failed, timed out, or ended without an answer."""

    code = Code.INTERNAL_SERVER_ERROR


class ExternalServiceError(TaskqError):
    """Raised when a service taskq calls on the client's behalf (the goto resolver) fails."""

    code = Code.EXTERNAL_SERVICE_ERROR


class Unconfirmed(TaskqError):
    """Raised when a write could not be confirmed durable in time (TASKQ_DURABILITY): outcome unknown."""

    code = Code.SERVICE_UNAVAILABLE


class NoRedis(TaskqError):
    """Raised when a command that needs Redis finds neither a running stack nor a Redis it may use."""

    code = Code.SERVICE_UNAVAILABLE
