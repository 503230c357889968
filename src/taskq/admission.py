"""Batch admission: validate tasks in Python, then admit the valid ones in one atomic Lua call."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from taskq.errors import (
    AlreadyExists,
    Code,
    InsufficientCredits,
    QueueLimitExceeded,
    TaskqError,
    Unauthorized,
    ValidationFailed,
)
from taskq.metrics import count_rejections
from taskq.pricing import credits_for
from taskq.schemas.tasks import FieldError, TaskRequest, TaskType, iso_ms
from taskq.settings import Settings, key_setting
from taskq.store import Org, Store, now_ms

ITEM_ERROR_MESSAGES = {
    Code.RESOURCE_ALREADY_EXISTS: "A task with this idempotency key already exists",
    Code.INSUFFICIENT_CREDITS: "Insufficient credits for this task",
}


@dataclass(frozen=True, slots=True)
class Accepted:
    index: int
    task: dict[str, Any]
    credits: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    error: TaskqError


Outcome = Accepted | Rejected


def new_task_ids(n: int) -> list[str]:
    """n random (version 4) UUIDs from one read of the system's randomness: os.urandom per id costs
    more than the rest of admitting a task on some machines."""
    digits = os.urandom(16 * n).hex()
    ids = []
    for i in range(0, 32 * n, 32):
        h = digits[i : i + 32]
        variant = "89ab"[int(h[16], 16) & 3]  # RFC 4122 variant bits
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return ids


@lru_cache(maxsize=64)
def created_at(now: int) -> str:
    return iso_ms(now)


def provider_errors(task: TaskRequest, settings: Settings) -> list[FieldError]:
    """A task type whose provider has no key configured is refused, naming the setting that enables it."""
    if settings.provider_key(task.task_type) is not None:
        return []
    env = key_setting(task.task_type)
    return [FieldError("taskType", f"{task.task_type.value} is not configured on this server; set {env}")]


#: Checks a webhook url at admission: None if it may be used, else what is wrong with it.
WebhookCheck = Callable[[str], str | None]


def validate(
    parsed: TaskRequest | list[FieldError], settings: Settings, webhook_check: WebhookCheck | None = None
) -> TaskRequest | list[FieldError]:
    """Run the checks that need settings: provider configured, webhook target allowed."""
    if isinstance(parsed, list):
        return parsed
    errors = provider_errors(parsed, settings)
    if not errors and parsed.webhook_url and webhook_check is not None:
        problem = webhook_check(parsed.webhook_url)
        if problem:
            errors = [FieldError("webhook.url", problem)]
    return errors or parsed


def validate_batch(
    tasks: list[TaskRequest], settings: Settings, webhook_check: WebhookCheck | None = None
) -> list[TaskRequest | list[FieldError]]:
    """``validate`` for a batch that parsed in full; each task type's provider is looked up once."""
    missing: dict[TaskType, list[FieldError]] = {}
    checked: list[TaskRequest | list[FieldError]] = []
    for task in tasks:
        errors = missing.get(task.task_type)
        if errors is None:
            errors = missing[task.task_type] = provider_errors(task, settings)
        if errors:
            checked.append(list(errors))
        elif task.webhook_url and webhook_check is not None and (problem := webhook_check(task.webhook_url)):
            checked.append([FieldError("webhook.url", problem)])
        else:
            checked.append(task)
    return checked


def invalid(index: int, errors: list[FieldError]) -> Rejected:
    details = {"errors": [e.to_json() for e in errors]}
    return Rejected(index, ValidationFailed(f"Invalid task at index {index}", details))


def admit(
    store: Store,
    settings: Settings,
    org: Org,
    items: list[TaskRequest | list[FieldError]],
    *,
    batch_id: str = "",
    batch_webhook: str = "",
) -> list[Outcome]:
    """Admit a batch atomically: queue limit for the whole batch, then per task idempotency and credits.

    Raises QueueLimitExceeded (nothing admitted) when the valid tasks would pass the org's queue limit,
    and AlreadyExists (nothing admitted) when a batch with this id exists: a batch id admits once.
    """
    now = now_ms()
    ids = new_task_ids(len(items))
    outcomes: dict[int, Outcome] = {}
    valid: list[tuple[int, str, TaskRequest, int]] = []
    packed: list[list[Any]] = []
    payloads: list[bytes] = []  # separate arguments: no JSON-in-JSON escaping for Lua to undo
    prices: dict[TaskType, int] = {}  # per type, looked up once per batch
    for index, item in enumerate(items):
        if isinstance(item, list):
            outcomes[index] = invalid(index, item)
            continue
        task_id = ids.pop()
        ttype = item.task_type  # a StrEnum: the member is its own value (``.value`` is a slow descriptor)
        base = prices.get(ttype)
        if base is None:
            base = prices[ttype] = settings.price(ttype)
        cost = credits_for(item, base)
        valid.append((index, task_id, item, cost))
        idem, hook = item.idempotency_key or "", item.webhook_url or ""
        packed.append([task_id, ttype, item.priority, cost, idem, hook, index, 0, item.due_ms(now)])
        payloads.append(item.payload.__pydantic_serializer__.to_json(item.payload))
    if valid or batch_id:
        shard = org.shard
        reply = store.scripts.start(
            "admit",
            keys=[
                shard.org(org.id),
                shard.seq,
                shard.rr,
                shard.turn,
                shard.capped,
                shard.wake,
                shard.delayed,
            ],
            args=[
                shard.tag,
                org.id,
                now,
                orjson.dumps(packed),
                batch_id,
                len(items),
                batch_webhook,
                settings.batch_ttl_seconds,
                *payloads,
            ],
        )
        # While Redis runs the script: the answers of a batch admitted in full, the usual case.
        created = created_at(now)
        for index, task_id, item, cost in valid:
            outcomes[index] = _accepted(index, task_id, item, cost, created, item.due_ms(now))
        result = reply()
        status = result[0]
        if status == "batch_exists":
            raise AlreadyExists(f"Batch {batch_id} was already admitted", {"batchId": batch_id})
        if status == "queue_full":
            limit = int(result[1])
            raise QueueLimitExceeded(
                f"Queue limit exceeded. Maximum {limit} queued tasks allowed per organization",
                {"limit": limit},
            )
        if status == "no_org":
            raise Unauthorized("organization record is missing")
        for (index, _, item, cost), verdict in zip(valid, result[1:], strict=True):
            if verdict != "ok":
                outcomes[index] = _refused(index, item, cost, verdict)
    invalid_count = len(items) - len(valid)
    if invalid_count:
        count_rejections(store.client, org.shard, Code.VALIDATION_ERROR.value, invalid_count)
    return [outcomes[i] for i in range(len(items))]


def _accepted(index: int, task_id: str, item: TaskRequest, cost: int, created: str, due: int) -> Accepted:
    task: dict[str, Any] = {
        "id": task_id,
        "taskType": item.task_type,
        "status": "QUEUED",
        "priority": item.priority,
        "createdAt": created,
        "latencyMs": None,
        "idempotencyKey": item.idempotency_key,
    }
    if due:
        task["runAt"] = iso_ms(due)
    return Accepted(index, task, {"creditsToCharge": cost, "creditsCharged": None})


def _refused(index: int, item: TaskRequest, cost: int, verdict: str) -> Rejected:
    """A task the script refused: out of credits, or its idempotency key names an existing task."""
    if verdict == "credits":
        return Rejected(
            index,
            InsufficientCredits(ITEM_ERROR_MESSAGES[Code.INSUFFICIENT_CREDITS], {"creditsToCharge": cost}),
        )
    existing = verdict.removeprefix("dup:")
    details = {"field": "idempotencyKey", "value": item.idempotency_key, "taskId": existing}
    return Rejected(index, AlreadyExists(ITEM_ERROR_MESSAGES[Code.RESOURCE_ALREADY_EXISTS], details))


__all__ = ["Accepted", "Outcome", "Rejected", "TaskType", "admit", "validate", "validate_batch"]
