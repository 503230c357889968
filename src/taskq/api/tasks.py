"""Task endpoints: create one, create a batch, read one."""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Blueprint, request

from taskq.admission import Accepted, Outcome, admit, validate
from taskq.api import authenticate, settings, store
from taskq.api.errors import HttpError, timestamp
from taskq.errors import Code, TaskqError, ValidationFailed
from taskq.schemas.tasks import FieldError, TaskRequest, parse_task, task_view

bp = Blueprint("tasks", __name__, url_prefix="/v1/async")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(*, status: int) -> Any:
    """The request body as JSON; anything else is a clear error with the given status."""
    if not request.is_json:
        raise HttpError(Code.UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json", status=415)
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        message = "Request body is not valid UTF-8 JSON"
        raise HttpError(
            Code.VALIDATION_ERROR, message, [{"field": "body", "message": str(exc)[:200]}], status=status
        ) from None


def _checked(raw: object, webhook_check: Any) -> TaskRequest | list[FieldError]:
    return validate(parse_task(raw), settings(), webhook_check)


def _webhook_check() -> Any:
    """Admission-time webhook target check, resolving each host once per request."""
    from taskq.webhooks import ssrf

    cfg = settings()
    allow = ssrf.parse_networks(cfg.webhook_allow_networks)
    seen: dict[str, str | None] = {}

    def check(url: str) -> str | None:
        if url not in seen:
            try:
                ssrf.check_url(url, allow, cfg.webhook_require_https)
                seen[url] = None
            except ssrf.UnsafeTarget as exc:
                seen[url] = str(exc)
        return seen[url]

    return check


def _batch_webhook(check: Any) -> str:
    """The optional batch.completed webhook: ?batchWebhook=<url> (or .url) or a Batch-Webhook header."""
    url = (
        request.args.get("batchWebhook")
        or request.args.get("batchWebhook.url")
        or request.args.get("batchWebhook[url]")
        or request.headers.get("Batch-Webhook")
        or ""
    )
    if not url:
        return ""
    problem = check(url) if len(url) <= 2048 else "url is longer than 2048 characters"
    if problem:
        raise HttpError(
            Code.VALIDATION_ERROR,
            "Invalid batch webhook",
            [{"field": "batchWebhook.url", "message": problem}],
            status=422,
        )
    return url


def _item(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Accepted):
        return {"success": True, "index": outcome.index, "task": outcome.task, "credits": outcome.credits}
    err = outcome.error
    error: dict[str, Any] = {"code": err.code.value, "message": err.message}
    if err.details is not None:
        error["details"] = err.details
    error["timestamp"] = timestamp()
    return {"success": False, "index": outcome.index, "error": error}


@bp.post("/task/batch")
def create_batch() -> Any:
    org = authenticate()
    body = read_json(status=422)
    limit = settings().max_batch_size
    if not isinstance(body, list):
        raise HttpError(Code.VALIDATION_ERROR, "Request body must be a JSON array of tasks", status=422)
    if not 1 <= len(body) <= limit:
        raise HttpError(
            Code.VALIDATION_ERROR,
            f"A batch holds 1 to {limit} tasks; got {len(body)}",
            {"count": len(body), "max": limit},
            status=422,
        )
    check = _webhook_check()
    batch_hook = _batch_webhook(check)
    items = [_checked(raw, check) for raw in body]
    batch_id = str(uuid.uuid4())
    outcomes = admit(store(), settings(), org, items, batch_id=batch_id, batch_webhook=batch_hook)
    results = [_item(o) for o in outcomes]
    succeeded = sum(1 for r in results if r["success"])
    return {
        "success": True,
        "batchId": batch_id,
        "summary": {"total": len(results), "succeeded": succeeded, "failed": len(results) - succeeded},
        "results": results,
    }


@bp.post("/task")
def create_task() -> Any:
    org = authenticate()
    body = read_json(status=400)
    item = _checked(body, _webhook_check())
    if isinstance(item, list):
        raise ValidationFailed("Request validation failed", [e.to_json() for e in item])
    outcome = admit(store(), settings(), org, [item])[0]
    if isinstance(outcome, Accepted):
        return {"success": True, "task": outcome.task, "credits": outcome.credits}
    error: TaskqError = outcome.error
    raise error


@bp.get("/task/<task_id>")
def get_task(task_id: str) -> Any:
    org = authenticate()
    return task_view(store().task(org, task_id))
