"""Task endpoints: create one, create a batch, read one."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, NoReturn

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from taskq import scheduler
from taskq.admission import Accepted, Outcome, WebhookCheck, admit, validate, validate_batch
from taskq.api import authenticate, settings, store
from taskq.api.body import read_body
from taskq.api.errors import timestamp
from taskq.errors import InvalidBatch, TaskqError, UnsafeTarget, UnsupportedMediaType, ValidationFailed
from taskq.schemas.tasks import FieldError, TaskRequest, parse_batch_json, parse_task, task_view
from taskq.settings import Settings

bp = Blueprint("tasks", __name__, url_prefix="/v1/async")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def read_raw() -> bytes:
    """The request body of a JSON request (415 for any other content type)."""
    if not request.is_json:
        raise UnsupportedMediaType("Content-Type must be application/json")
    return read_body(settings().max_body_bytes)


def read_json() -> Any:
    """The request body as JSON; anything else is a clear error (400)."""
    return parse_json(read_raw())


def parse_json(raw: bytes, *, refusal: type[ValidationFailed] = ValidationFailed) -> Any:
    """The body as JSON, or `refusal` (ValidationFailed: 400; InvalidBatch: 422)."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        message = "Request body is not valid UTF-8 JSON"
        raise refusal(message, [{"field": "body", "message": str(exc)[:200]}]) from None


def _checked(raw: object, webhook_check: WebhookCheck, cfg: Settings) -> TaskRequest | list[FieldError]:
    return validate(parse_task(raw), cfg, webhook_check)


# Lookups run on daemon threads (a lookup stuck in getaddrinfo must not hold a request, nor block
# process exit), at most this many at once; past that a target is refused as not checkable now.
_dns_slots = threading.BoundedSemaphore(32)


def _check_one(url: str, allow: Any, require_https: bool) -> str | None:
    from taskq.webhooks import ssrf

    try:
        ssrf.check_url(url, allow, require_https)
        return None
    except UnsafeTarget as exc:
        return str(exc)


def _start_check(
    url: str, allow: Any, require_https: bool
) -> tuple[threading.Event, list[str | None]] | None:
    if not _dns_slots.acquire(blocking=False):
        return None
    done, box = threading.Event(), []

    def run() -> None:
        try:
            box.append(_check_one(url, allow, require_https))
        finally:
            _dns_slots.release()
            done.set()

    threading.Thread(target=run, name="taskq-dns", daemon=True).start()
    return done, box


def _webhook_check(raw: object, extra: str = "") -> WebhookCheck:
    """Admission-time webhook target checks for a whole request, resolved concurrently under one
    deadline, so names that resolve slowly cannot hold an intake thread (the sender checks again)."""
    from taskq.webhooks import ssrf

    cfg = settings()
    allow = ssrf.parse_networks(cfg.webhook_allow_networks)
    items = raw if isinstance(raw, list) else [raw]
    urls = {extra} if extra else set()
    for item in items:
        hook = item.get("webhook") if isinstance(item, dict) else None
        if isinstance(hook, dict) and isinstance(hook.get("url"), str) and 0 < len(hook["url"]) <= 2048:
            urls.add(hook["url"])
    timeout = cfg.webhook_resolve_timeout_seconds
    started = {url: _start_check(url, allow, cfg.webhook_require_https) for url in urls}
    deadline = time.monotonic() + timeout
    verdicts: dict[str, str | None] = {}
    for url, pending in started.items():
        if pending is None:
            verdicts[url] = "webhook url could not be checked now (too many lookups in progress); retry"
        elif pending[0].wait(max(0.0, deadline - time.monotonic())) and pending[1]:
            verdicts[url] = pending[1][0]
        else:
            verdicts[url] = f"webhook url host did not resolve within {timeout:g} s"

    def check(url: str) -> str | None:
        return verdicts[url] if url in verdicts else _check_one(url, allow, cfg.webhook_require_https)

    return check


def _batch_webhook_url() -> str:
    """The optional batch.completed webhook: ?batchWebhook=<url> (or .url) or a Batch-Webhook header."""
    return (
        request.args.get("batchWebhook")
        or request.args.get("batchWebhook.url")
        or request.args.get("batchWebhook[url]")
        or request.headers.get("Batch-Webhook")
        or ""
    )


def _batch_webhook(check: WebhookCheck) -> str:
    url = _batch_webhook_url()
    if not url:
        return ""
    problem = check(url) if len(url) <= 2048 else "url is longer than 2048 characters"
    if problem:
        raise InvalidBatch("Invalid batch webhook", [{"field": "batchWebhook.url", "message": problem}])
    return url


def result_item(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Accepted):
        return {"success": True, "index": outcome.index, "task": outcome.task, "credits": outcome.credits}
    err = outcome.error
    error: dict[str, Any] = {"code": err.code.value, "message": err.message}
    if err.details is not None:
        error["details"] = err.details
    error["timestamp"] = timestamp()
    return {"success": False, "index": outcome.index, "error": error}


@bp.post("/task/batch")
def create_batch() -> ResponseReturnValue:
    org = authenticate()
    cfg = settings()
    raw = read_raw()
    fast = parse_batch_json(raw)
    if fast is not None and 1 <= len(fast) <= cfg.max_batch_size:
        # every task valid: check targets and providers, skip the per-item error reporting path
        urls = [t.webhook_url for t in fast if t.webhook_url]
        check = _webhook_check([{"webhook": {"url": u}} for u in urls], _batch_webhook_url())
        batch_hook = _batch_webhook(check)
        items = validate_batch(fast, cfg, check)
    else:
        items, batch_hook = _batch_items_slow(raw, cfg)
    batch_id = str(uuid.uuid4())
    outcomes = admit(store(), cfg, org, items, batch_id=batch_id, batch_webhook=batch_hook)
    results = [result_item(o) for o in outcomes]
    succeeded = sum(1 for r in results if r["success"])
    return {
        "success": True,
        "batchId": batch_id,
        "summary": {"total": len(results), "succeeded": succeeded, "failed": len(results) - succeeded},
        "results": results,
    }


def _batch_items_slow(raw: bytes, cfg: Settings) -> tuple[list[TaskRequest | list[FieldError]], str]:
    """Parse a batch item by item, so each invalid task is reported by index and field."""
    body = parse_json(raw, refusal=InvalidBatch)
    limit = cfg.max_batch_size
    if not isinstance(body, list):
        raise InvalidBatch("Request body must be a JSON array of tasks")
    if not 1 <= len(body) <= limit:
        raise InvalidBatch(
            f"A batch holds 1 to {limit} tasks; got {len(body)}", {"count": len(body), "max": limit}
        )
    check = _webhook_check(body, _batch_webhook_url())
    batch_hook = _batch_webhook(check)
    return [_checked(item, check, cfg) for item in body], batch_hook


@bp.post("/task")
def create_task() -> ResponseReturnValue:
    org = authenticate()
    body = read_json()
    item = _checked(body, _webhook_check(body), settings())
    if isinstance(item, list):
        raise ValidationFailed("Request validation failed", [e.to_json() for e in item])
    outcome = admit(store(), settings(), org, [item])[0]
    if isinstance(outcome, Accepted):
        return {"success": True, "task": outcome.task, "credits": outcome.credits}
    error: TaskqError = outcome.error
    raise error


@bp.get("/task/<task_id>")
def get_task(task_id: str) -> ResponseReturnValue:
    org = authenticate()
    return task_view(store().task(org, task_id))


@bp.post("/task/<task_id>/cancel")
def cancel_task(task_id: str) -> ResponseReturnValue:
    """Cancel a QUEUED task now, or a PROCESSING one at its next safe point (taskq's addition)."""
    org = authenticate()
    record = store().task(org, task_id)
    verdict = scheduler.cancel_task(store(), org, task_id, retention=settings().retention_seconds)
    canceled = verdict == "canceled"
    view = task_view(store().task(org, task_id)) if canceled else task_view(record)
    return {"success": True, **view, "canceled": canceled, "cancelRequested": not canceled}
