"""Synchronous monitor endpoints: one provider call through the queue, answered when it finishes; and
the goto resolver (free, outside the queue)."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
from flask import Blueprint, Response, g, request

from taskq import calls
from taskq.api import authenticate, settings, store
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
from taskq.schemas.tasks import TERMINAL, FieldError, TaskRequest, TaskType, parse_task

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


def run(task_type: TaskType) -> Any:
    org = authenticate()
    cfg = settings()
    task = parse_payload(task_type, parse_json(read_raw()))
    problems = calls.check(task, cfg)
    if problems:
        raise ValidationFailed("Request validation failed", [e.to_json() for e in problems])
    admitted = calls.admit(store(), cfg, org, task)
    g.slots = admitted.slots
    if isinstance(admitted, calls.Refused):
        raise admitted.error
    task_id = admitted.task_id
    try:
        done = calls.wait(
            store(), org, task_id, cfg.sync_timeout_seconds, request.environ.get("gunicorn.socket")
        )
        if done is None:
            verdict = calls.abandon(store(), cfg, org, task_id)
            if verdict not in TERMINAL:  # canceled now, or at its next safe point: never charged
                raise CallFailed(timeout_message(cfg.sync_timeout_seconds))
            done = calls.wait(store(), org, task_id, 1.0, None)  # it finished just now: its reply is there
    except TaskqError:
        raise
    except BaseException:
        _abandon(org, task_id)  # the intake is failing or stopping: the call must not run unanswered
        raise
    if done == calls.GONE:
        calls.abandon(store(), cfg, org, task_id)
        raise RequestCanceled("Request was canceled by client")
    if not isinstance(done, calls.Outcome):
        raise CallFailed("Internal server error")
    return answer(done, admitted)


def _abandon(org: Any, task_id: str) -> None:
    try:
        calls.abandon(store(), settings(), org, task_id)
    except Exception:
        from flask import current_app

        current_app.logger.warning("could not cancel synchronous call %s", task_id)


def answer(done: calls.Outcome, admitted: calls.Admitted) -> Any:
    """200 with the result (the same normalized result an async task stores), or the error. The call
    is charged what it reserved once its answer is here (the balance left is the one its admission
    saw)."""
    if done.status == "COMPLETED":
        g.credits = (admitted.cost, admitted.credits_left)
        body = b'{"success":true,"result":' + done.body.encode() + b"}"
        return Response(body, status=200, mimetype="application/json")
    if done.status == "CANCELED":
        raise RequestCanceled("Request was canceled")
    error = json.loads(done.body or "{}")
    code, message = str(error.get("code", "")), str(error.get("message", ""))
    details = {"reason": code, "message": message}
    if code == Code.DEADLINE_EXCEEDED:
        raise CallFailed(timeout_message(settings().sync_timeout_seconds), details)
    if code in RETRIED:
        raise CallFailed("Maximum retries exceeded", details)
    raise CallFailed(message or "Internal server error", details)


def _view(task_type: TaskType) -> Any:
    def view() -> Any:
        return run(task_type)

    view.__name__ = f"monitor_{task_type.value.lower()}"
    return view


for _path, _type in PATHS.items():
    bp.add_url_rule(f"/{_path}", view_func=_view(_type), methods=["POST"])


@bp.after_request
def _headers(response: Response) -> Response:
    """Concurrency headers once validation passed; credits on a 200 (cloro-api.md §10)."""
    slots: calls.Slots | None = g.get("slots")
    if slots is not None:
        response.headers["X-Concurrency-Limit"] = str(slots.limit)
        response.headers["X-Concurrency-Current"] = str(slots.current)
        response.headers["X-Concurrency-Remaining"] = str(slots.remaining)
    credits = g.get("credits")
    if credits is not None and response.status_code == 200:
        response.headers["X-Credits-Charged"] = str(credits[0])
        response.headers["X-Credits-Remaining"] = str(credits[1])
    return response


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
