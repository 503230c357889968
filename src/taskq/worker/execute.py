"""Run one claimed task through its provider adapter and decide its next transition."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from taskq.errors import Code
from taskq.flow import Lane
from taskq.providers import SPECS, ProviderConfig, ProviderError
from taskq.providers.ratelimits import Observed, observe
from taskq.scheduler import (
    Claimed,
    Refusal,
    after_error,
    complete,
    fail,
    sync_deadline,
    throttle,
    timeout_message,
)
from taskq.scripts import Op
from taskq.settings import Settings
from taskq.store import now_ms

log = logging.getLogger("taskq.worker")


@dataclass(frozen=True, slots=True)
class Outcome:
    """The transition to apply, and the error that led to it (None for a completion), for the logs."""

    op: Op[Any]
    code: str | None = None
    message: str | None = None
    refusal: Refusal | None = None  # the provider refused the key, not the task (see taskq.flow)
    fallback: Op[bool] | None = None  # applied when the throttle answers MUST_FAIL
    observed: Observed | None = None  # what the responses said about limits and tokens (flow control)


def context(task: Claimed) -> dict[str, Any]:
    """The log context of one task (``extra=``): never its payload, which is the customer's data."""
    return {"task_id": task.id, "org": task.org, "provider": task.task_type, "attempt": task.attempts}


async def execute(
    task: Claimed,
    http: httpx.AsyncClient,
    configs: dict[str, ProviderConfig],
    settings: Settings,
    rng: random.Random,
    lanes: Mapping[str, Lane] | None = None,
) -> Outcome:
    """``attempt`` with what the provider's responses said about its limits and the tokens used, when
    they said something (x-ratelimit-* headers, a usage block) and flow control is on (``lanes``)."""
    if not lanes:
        return await attempt(task, http, configs, settings, rng, lanes)
    observed = observe()
    outcome = await attempt(task, http, configs, settings, rng, lanes)
    if observed.requests is None and observed.tokens is None and observed.used is None:
        return outcome
    return dataclasses.replace(outcome, observed=observed)


async def attempt(
    task: Claimed,
    http: httpx.AsyncClient,
    configs: dict[str, ProviderConfig],
    settings: Settings,
    rng: random.Random,
    lanes: Mapping[str, Lane] | None = None,
) -> Outcome:
    """Call the provider with the key the claim gave the task; return complete, retry, fail, or (the
    provider refused the key: rate limit, quota, a refused key of a pool) throttle. Cancellation (lease
    lost, shutdown) propagates.

    A synchronous call starts no attempt after its deadline, and an attempt still running then ends
    there: its client has had its answer (500, the call canceled) by then.
    """
    retention = settings.retention_seconds
    config = configs.get(task.task_type)
    if config is None:
        message = f"{task.task_type} is not configured on this worker"
        code = Code.PROVIDER_NOT_CONFIGURED
        return Outcome(fail(task, code, message, now=now_ms(), retention=retention), code.value, message)
    deadline = sync_deadline(task, settings.sync_timeout_seconds)
    late = timeout_message(settings.sync_timeout_seconds)
    if deadline is not None and now_ms() >= deadline:
        code = Code.DEADLINE_EXCEEDED
        return Outcome(fail(task, code, late, now=now_ms(), retention=retention), code.value, late)
    lane = lanes.get(task.task_type) if lanes else None
    if lane is not None and task.key in lane.keys:
        config = dataclasses.replace(config, api_key=lane.keys[task.key])
    try:
        spec = SPECS[task.task_type]
        payload = spec.payload.model_validate_json(task.payload_json)
        call = spec.run(payload, http, config)
        if deadline is None:
            result: dict[str, Any] = await call
        else:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + (deadline - now_ms()) / 1000):
                result = await call
    except ProviderError as exc:
        refusal = refused(exc, lane) if lane is not None and task.key in lane.keys else None
        if refusal is not None and lane is not None:
            return _throttled(task, exc, refusal, lane, settings)
        op = after_error(
            task, exc.code, exc.message, retryable=exc.retryable, retry_after=exc.retry_after,
            now=now_ms(), max_attempts=settings.max_attempts, base=settings.retry_base_seconds,
            cap=settings.retry_max_seconds, retention=retention, rng=rng, deadline=deadline,
            deadline_message=late,
        )  # fmt: skip
        return Outcome(op, exc.code.value, exc.message)
    except Exception as exc:
        if isinstance(exc, TimeoutError) and deadline is not None and now_ms() >= deadline - 100:
            code = Code.DEADLINE_EXCEEDED
            return Outcome(fail(task, code, late, now=now_ms(), retention=retention), code.value, late)
        # A bug on our side, not the provider's: fail the task rather than leave it PROCESSING.
        log.exception("task crashed the worker code", extra=context(task))
        message = f"internal worker error: {type(exc).__name__}"
        code = Code.WORKER_ERROR
        return Outcome(fail(task, code, message, now=now_ms(), retention=retention), code.value, message)
    return Outcome(complete(task, result, now=now_ms(), retention=retention))


def refused(exc: ProviderError, lane: Lane) -> Refusal | None:
    """The provider refused the key rather than the task: a rate limit (429), an exhausted quota, or a
    refused key (401/403) while the pool has other keys."""
    if exc.code == Code.PROVIDER_RATE_LIMITED:
        return Refusal("rate", exc.message, exc.retry_after, exc.limit)
    if exc.code == Code.PROVIDER_QUOTA_EXHAUSTED:
        return Refusal("quota", exc.message)
    if exc.code == Code.PROVIDER_AUTH_FAILED and len(lane.keys) > 1:
        return Refusal("auth", exc.message)
    return None


def _throttled(
    task: Claimed, exc: ProviderError, refusal: Refusal, lane: Lane, settings: Settings
) -> Outcome:
    now, retention = now_ms(), settings.retention_seconds
    op = throttle(task, refusal, rate=lane.rate, burst=lane.burst, pool=lane.pool, now=now,
                  retention=retention, give_up_seconds=settings.rate_limit_give_up_seconds,
                  probe_seconds=settings.quota_probe_seconds)  # fmt: skip
    if refusal.kind == "rate":
        message = f"{exc.message} (rate limited for over {settings.rate_limit_give_up_seconds:g} s)"
    else:
        message = f"{exc.message} (no other key of the pool left)"
    fallback = fail(task, exc.code, message, now=now, retention=retention)
    return Outcome(op, exc.code.value, exc.message, refusal, fallback)
