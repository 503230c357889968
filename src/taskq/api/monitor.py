"""Synchronous monitor endpoints: the paths and payloads of the calls through the queue (served on the
event loop by taskq.api.asgi) and what a call that failed answers; and the goto resolver (free, outside
the queue, served here by Flask)."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
from flask import Blueprint

from taskq import calls
from taskq.api import authenticate, settings
from taskq.api.tasks import parse_json, read_raw
from taskq.errors import (
    CallFailed,
    Code,
    ExternalServiceError,
    RequestCanceled,
    TaskqError,
    ValidationFailed,
)
from taskq.providers import goto
from taskq.providers.base import ProviderError
from taskq.scheduler import timeout_message
from taskq.schemas.tasks import FieldError, TaskRequest, TaskType, parse_task

bp = Blueprint("monitor", __name__, url_prefix="/v1/monitor")

#: The path of each task type's synchronous endpoint (cloro-api.md §6).
PATHS: dict[str, TaskType] = {
    path: TaskType(task_type)
    for path, task_type in [
        ("chatgpt", "CHATGPT"),
        ("gemini", "GEMINI"),
        ("grok", "GROK"),
        ("copilot", "COPILOT"),
        ("perplexity", "PERPLEXITY"),
        ("aimode", "AIMODE"),
        ("google", "GOOGLE"),
        ("google/news", "GOOGLE_NEWS"),
    ]
}

#: Failure codes that mean every attempt failed for a reason that could pass ("Maximum retries exceeded").
RETRIED = frozenset(
    {Code.PROVIDER_UNAVAILABLE, Code.PROVIDER_RATE_LIMITED, Code.PROVIDER_TIMEOUT, Code.WORKER_LOST}
)


def parse_payload(task_type: TaskType, body: Any) -> TaskRequest:
    """The request body as this task type's payload (strict: unknown fields refused), or 400 with
    details as an array of {field, message}."""
    if not isinstance(body, dict):
        errors = [FieldError("body", "the request body must be a JSON object")]
    else:
        parsed = parse_task({"taskType": task_type.value, "payload": body})
        if isinstance(parsed, TaskRequest):
            return parsed
        errors = [FieldError(e.field.removeprefix("payload.").removeprefix("payload"), e.message)
                  for e in parsed]  # fmt: skip
        errors = [e if e.field else FieldError("body", e.message) for e in errors]
    raise ValidationFailed("Request validation failed", [e.to_json() for e in errors])


def failure(done: calls.Outcome, timeout: float) -> TaskqError:
    """The error a call that did not complete answers: canceled (499), out of time, every attempt
    failed ("Maximum retries exceeded") or the provider's refusal (500); details.reason is the task's
    failure code."""
    if done.status == "CANCELED":
        return RequestCanceled("Request was canceled")
    error = json.loads(done.body or "{}")
    code, message = str(error.get("code", "")), str(error.get("message", ""))
    details = {"reason": code, "message": message}
    if code == Code.DEADLINE_EXCEEDED:
        return CallFailed(timeout_message(timeout), details)
    if code in RETRIED:
        return CallFailed("Maximum retries exceeded", details)
    return CallFailed(message or "Internal server error", details)


_client_lock = threading.Lock()
_clients: dict[str, httpx.Client] = {}


def _http() -> httpx.Client:
    """One HTTP client per process for the resolver (connections reused across requests)."""
    with _client_lock:
        client = _clients.get("goto")
        if client is None:
            client = _clients["goto"] = httpx.Client(follow_redirects=False)
        return client


@bp.post("/google/goto")
def resolve_goto() -> Any:
    """Resolve a Google redirect link: free, takes no concurrency slot; 502 when Google won't say."""
    authenticate()
    cfg = settings()
    body = parse_json(read_raw())
    url = body.get("url") if isinstance(body, dict) else None
    errors: list[FieldError] = []
    if not isinstance(body, dict):
        errors.append(FieldError("body", "the request body must be a JSON object"))
    else:
        errors += [FieldError(k, "unknown field") for k in body if k != "url"]
        if not isinstance(url, str) or not 1 <= len(url) <= 4096:
            errors.append(
                FieldError("url", "url is required: a Google redirect link of at most 4096 characters")
            )
        elif problem := goto.link_problem(url):
            errors.append(FieldError("url", problem))
    if errors:
        raise ValidationFailed("Request validation failed", [e.to_json() for e in errors])
    assert isinstance(url, str)
    base = cfg.upstream_base_url or cfg.google_base_url
    try:
        destination = goto.resolve(url, _http(), base, cfg.goto_timeout_seconds)
    except ProviderError as exc:
        raise ExternalServiceError(
            "goto resolve request failed", {"service": "google", "reason": exc.message}
        ) from exc
    return {"success": True, "result": {"url": destination, "redirectLink": url}}
