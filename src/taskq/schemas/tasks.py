"""Task request validation, the stored task record, and the JSON views the API and webhooks return."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from taskq.providers import PAYLOAD_MODELS, SPECS
from taskq.schemas.payloads import Payload

#: The task types of the provider registry (taskq.providers.SPECS), in its order.
# mypy cannot list members made at run time: TaskType.X does not type-check, TaskType(value) does.
TaskType = StrEnum("TaskType", [(t, t) for t in SPECS], module=__name__)  # type: ignore[misc]


class TaskStatus(StrEnum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"  # taskq's addition: canceled by request (POST .../cancel)


TASK_TYPES: dict[str, TaskType] = {t.value: t for t in TaskType}  # faster than TaskType(value)

TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED})


class WebhookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    url: Annotated[str, Field(min_length=1, max_length=2048)]


#: The furthest ahead a task may be delayed (runAt or delaySeconds): it holds credits and a queue place.
MAX_DELAY_SECONDS = 365 * 24 * 3600


def epoch_ms(value: str) -> int:
    """An ISO-8601 date-time with a UTC offset (or Z) as epoch milliseconds; ValueError otherwise."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO-8601 date-time such as 2026-04-09T15:00:00Z") from None
    if when.tzinfo is None:
        raise ValueError("must carry a UTC offset (Z or +hh:mm)")
    return int(when.timestamp() * 1000)


def _run_at(value: str) -> int:
    ms = epoch_ms(value)
    if ms > (datetime.now(UTC).timestamp() + MAX_DELAY_SECONDS) * 1000:
        raise ValueError(f"must be at most {MAX_DELAY_SECONDS // 86400} days ahead")
    return ms


def _one_delay(value: Any, info: ValidationInfo) -> Any:
    if value is not None and info.data.get("runAt") is not None:
        raise ValueError("give runAt or delaySeconds, not both")
    return value


def _task_model(task_type: str, payload: type[BaseModel]) -> type[BaseModel]:
    """The request model of one task type: its payload model under the shared envelope fields."""
    return create_model(
        f"{task_type}Task",
        __config__=ConfigDict(extra="forbid", strict=True, frozen=True),
        __validators__={"one_delay": field_validator("delaySeconds")(_one_delay)},
        taskType=(Literal[task_type], ...),  # type: ignore[arg-type]
        payload=(payload, ...),
        priority=(Annotated[int, Field(ge=1, le=10)], 1),
        idempotencyKey=(Annotated[str, Field(min_length=1, max_length=255)] | None, None),
        webhook=(WebhookSpec | None, None),
        # Delayed tasks (taskq's addition): QUEUED at once, claimable from then on. runAt becomes
        # epoch ms here; delaySeconds counts from admission.
        runAt=(Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_run_at)] | None, None),
        delaySeconds=(Annotated[float, Field(ge=0, le=MAX_DELAY_SECONDS)] | None, None),
    )


#: One validator for every task type, picked by taskType (one pass over the input).
_TASK_UNION: Any = Annotated[
    Union[tuple(_task_model(t, m) for t, m in PAYLOAD_MODELS.items())],  # noqa: UP007
    Field(discriminator="taskType"),
]
_TASK: TypeAdapter[Any] = TypeAdapter(_TASK_UNION)


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 3x to build, 500 times per batch
class TaskRequest:
    """A validated task, ready for admission (treat as read-only)."""

    task_type: TaskType
    payload: Payload
    priority: int
    idempotency_key: str | None
    webhook_url: str | None
    run_at_ms: int | None = None  # runAt: not claimable before this time
    delay_ms: int | None = None  # delaySeconds: not claimable before admission + this

    def due_ms(self, now: int) -> int:
        """When the task becomes claimable if admitted at `now`; 0 for at once."""
        due = self.run_at_ms if self.run_at_ms is not None else now + (self.delay_ms or 0)
        return due if due > now else 0


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


TYPE_NAMES = ", ".join(PAYLOAD_MODELS)


def _field_errors(exc: ValidationError) -> list[FieldError]:
    errors = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        if err["type"] == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag")
            errors.append(FieldError("taskType", f"unknown task type {tag!r}; expected one of {TYPE_NAMES}"))
            continue
        if err["type"] == "union_tag_not_found":
            errors.append(FieldError("taskType", f"taskType is required: one of {TYPE_NAMES}"))
            continue
        if loc and loc[0] in PAYLOAD_MODELS:  # the discriminator's branch name is not a field
            loc = loc[1:]
        errors.append(FieldError(".".join(str(part) for part in loc) or "body", _message(err)))
    return errors


def _message(err: Any) -> str:
    """pydantic's message, without the "Value error, " it puts before a validator's own words."""
    raised = err.get("ctx", {}).get("error")
    if err["type"] in ("value_error", "assertion_error") and raised is not None and str(raised):
        return str(raised)
    return str(err["msg"])


_BATCH: TypeAdapter[list[Any]] = TypeAdapter(list[_TASK_UNION])


def _request(task: Any) -> TaskRequest:
    return TaskRequest(
        task_type=TASK_TYPES[task.taskType],
        payload=task.payload,
        priority=task.priority,
        idempotency_key=task.idempotencyKey,
        webhook_url=task.webhook.url if task.webhook else None,
        run_at_ms=task.runAt,
        delay_ms=None if task.delaySeconds is None else int(task.delaySeconds * 1000),
    )


def parse_batch_json(raw: bytes) -> list[TaskRequest] | None:
    """The fast path for a batch body: parse and validate every task in one call, straight from the
    bytes. None when the body is not a JSON array of valid tasks: the caller then takes the slow path,
    which reports every problem by index and field."""
    try:
        tasks = _BATCH.validate_json(raw)
    except (ValidationError, ValueError):
        return None
    return [_request(task) for task in tasks]


def parse_task(raw: object) -> TaskRequest | list[FieldError]:
    """Validate one submitted task; return the task or the errors, each naming its field."""
    if not isinstance(raw, dict):
        return [FieldError("body", "each task must be a JSON object")]
    try:
        task = _TASK.validate_python(raw)
    except ValidationError as exc:
        return _field_errors(exc)
    return _request(task)


def iso_ms(epoch_ms: int) -> str:
    """Format epoch milliseconds as ISO-8601 UTC with milliseconds (2026-04-09T15:00:00.000Z)."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{epoch_ms % 1000:03d}Z"
    )


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task as stored in its Redis hash (see keys.TASK_FIELDS)."""

    id: str
    org: str
    task_type: str
    status: str
    priority: int
    created_ms: int
    payload_json: str
    idempotency_key: str | None
    webhook_url: str | None
    cost: int
    charged: int | None
    attempts: int
    started_ms: int | None
    finished_ms: int | None
    result_json: str | None
    error_json: str | None
    batch: str | None
    delivered_ms: int | None
    delivery_state: str | None
    delivery_attempts: int = 0
    due_ms: int | None = None  # a delayed task: when it becomes claimable

    @classmethod
    def from_hash(cls, task_id: str, h: dict[str, str]) -> TaskRecord:
        return cls(
            id=task_id,
            org=h["org"],
            task_type=h["type"],
            status=h["status"],
            priority=int(h["prio"]),
            created_ms=int(h["created"]),
            payload_json=h.get("payload", "{}"),
            idempotency_key=h.get("idem") or None,
            webhook_url=h.get("webhook") or None,
            cost=int(h.get("cost", "0")),
            charged=_int_or_none(h.get("charged")),
            attempts=int(h.get("attempts", "0")),
            started_ms=_int_or_none(h.get("started")),
            finished_ms=_int_or_none(h.get("finished")),
            result_json=h.get("result") or None,
            error_json=h.get("error") or None,
            batch=h.get("batch") or None,
            delivered_ms=_int_or_none(h.get("delivered")),
            delivery_state=h.get("wh_state") or None,
            delivery_attempts=int(h.get("wh_attempts") or 0),
            due_ms=_int_or_none(h.get("due")),
        )

    @property
    def latency_ms(self) -> int | None:
        if self.status in TERMINAL and self.started_ms is not None and self.finished_ms is not None:
            return self.finished_ms - self.started_ms
        return None


def summary_view(t: TaskRecord) -> dict[str, Any]:
    view = {
        "id": t.id,
        "taskType": t.task_type,
        "status": t.status,
        "priority": t.priority,
        "createdAt": iso_ms(t.created_ms),
        "latencyMs": t.latency_ms,
        "idempotencyKey": t.idempotency_key,
    }
    if t.due_ms is not None and t.status == TaskStatus.QUEUED and t.started_ms is None:
        view["runAt"] = iso_ms(t.due_ms)  # a delayed task not yet started: when it will run
    return view


def credits_view(t: TaskRecord) -> dict[str, Any]:
    return {"creditsToCharge": t.cost, "creditsCharged": t.charged}


def event_view(t: TaskRecord) -> dict[str, Any]:
    """The finished task as GET returns it, without the webhook block: the webhook body."""
    view: dict[str, Any] = {"task": summary_view(t), "credits": credits_view(t)}
    if t.status == TaskStatus.COMPLETED and t.result_json is not None:
        view["response"] = json.loads(t.result_json)
    elif t.status in (TaskStatus.FAILED, TaskStatus.CANCELED) and t.error_json is not None:
        view["response"] = {"error": json.loads(t.error_json)}
    return view


def batch_event_view(batch_id: str, h: dict[str, str]) -> dict[str, Any]:
    """The batch.completed webhook body of a finished batch, from its stored record (keys: T:b:<id>)."""
    return {
        "type": "batch.completed",
        "batchId": batch_id,
        "total": int(h["total"]),
        "admitted": int(h["admitted"]),
        "counts": {s: int(h.get(s.lower()) or 0) for s in ("COMPLETED", "FAILED", "CANCELED")},
        "creditsCharged": int(h.get("charged") or 0),
        "createdAt": iso_ms(int(h["created"])),
        "finishedAt": iso_ms(int(h["finished"])),
    }


def task_view(t: TaskRecord) -> dict[str, Any]:
    """GET /v1/async/task/{id}: task, credits, webhook (terminal tasks with a url), response."""
    view = event_view(t)
    if t.webhook_url and t.status in TERMINAL:
        view["webhook"] = {
            "url": t.webhook_url,
            "delivered": t.delivered_ms is not None,
            "deliveredAt": iso_ms(t.delivered_ms) if t.delivered_ms is not None else None,
            "state": t.delivery_state,
            "attempts": t.delivery_attempts,
        }
    return view
