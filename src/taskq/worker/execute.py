"""Run one claimed task through its provider adapter and decide its next transition."""

from __future__ import annotations

import logging
import random
from typing import Any

import httpx

from taskq.errors import Code
from taskq.providers import ADAPTERS, ProviderConfig, ProviderError
from taskq.scheduler import Claimed, Op, after_error, complete, fail
from taskq.schemas.payloads import PAYLOAD_MODELS
from taskq.settings import Settings
from taskq.store import now_ms

log = logging.getLogger("taskq.worker")


async def execute(
    task: Claimed,
    http: httpx.AsyncClient,
    configs: dict[str, ProviderConfig],
    settings: Settings,
    rng: random.Random,
) -> Op[bool]:
    """Call the provider; return complete, retry or fail. Cancellation (lease lost, shutdown) propagates."""
    retention = settings.retention_seconds
    config = configs.get(task.task_type)
    if config is None:
        message = f"{task.task_type} is not configured on this worker"
        return fail(task, Code.PROVIDER_NOT_CONFIGURED, message, now=now_ms(), retention=retention)
    try:
        payload = PAYLOAD_MODELS[task.task_type].model_validate_json(task.payload_json)
        result: dict[str, Any] = await ADAPTERS[task.task_type](payload, http, config)
    except ProviderError as exc:
        return after_error(
            task, exc.code, exc.message, retryable=exc.retryable, retry_after=exc.retry_after,
            now=now_ms(), max_attempts=settings.max_attempts, base=settings.retry_base_seconds,
            cap=settings.retry_max_seconds, retention=retention, rng=rng,
        )  # fmt: skip
    except Exception as exc:
        # A bug on our side, not the provider's: fail the task rather than leave it PROCESSING.
        log.exception("task %s (%s) crashed the worker code", task.id, task.task_type)
        message = f"internal worker error: {type(exc).__name__}"
        return fail(task, Code.WORKER_ERROR, message, now=now_ms(), retention=retention)
    return complete(task, result, now=now_ms(), retention=retention)
