"""Schedule request validation: the body of POST and PATCH /v1/async/schedules."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from taskq.schemas.tasks import FieldError, WebhookSpec

#: The longest everySeconds: one year.
MAX_EVERY_SECONDS = 365 * 24 * 3600


class ScheduleFields(BaseModel):
    """Every field a schedule body may carry; POST requires name, tasks and cron or everySeconds."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    cron: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    everySeconds: Annotated[int, Field(ge=1, le=MAX_EVERY_SECONDS)] | None = None
    timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    tasks: Annotated[list[Any], Field(min_length=1)] | None = None
    batchWebhook: Annotated[str, Field(min_length=1, max_length=2048)] | WebhookSpec | None = None
    paused: bool | None = None

    @property
    def batch_webhook_url(self) -> str | None:
        hook = self.batchWebhook
        return hook.url if isinstance(hook, WebhookSpec) else hook


def parse_schedule(raw: object) -> ScheduleFields | list[FieldError]:
    """The schedule fields of a request body, or the errors, each naming its field."""
    if not isinstance(raw, dict):
        return [FieldError("body", "a schedule must be a JSON object")]
    try:
        return ScheduleFields.model_validate(raw)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False):
            loc = [str(part) for part in err["loc"] if part not in ("str", "constrained-str", "WebhookSpec")]
            errors.append(FieldError(".".join(loc) or "body", err["msg"]))
        return errors
