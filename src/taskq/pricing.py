"""Credits a task costs: the per-provider base price from settings plus the add-ons of cloro-api.md §9."""

from __future__ import annotations

from taskq.schemas.payloads import ChatGPTPayload, ChatPayload, GoogleNewsPayload, GooglePayload, Payload
from taskq.schemas.tasks import TaskRequest

ADDON = 2


def credits_for(task: TaskRequest, base_price: int) -> int:
    """creditsToCharge for one validated task."""
    payload: Payload = task.payload
    cost = base_price
    # a field lookup, not getattr(): a missing attribute on a pydantic model is a slow exception
    if isinstance(payload, ChatPayload) and payload.state is not None:
        cost += ADDON
    if isinstance(payload, ChatGPTPayload):
        inc = payload.include
        if inc.rawResponse or inc.searchQueries or inc.ads or inc.shopping:
            cost += ADDON
    elif isinstance(payload, GooglePayload):
        if payload.include.aioverview is not None or payload.include.paaAioverview:
            cost += ADDON
        cost += ADDON * ((payload.pages or 1) - 1)
    elif isinstance(payload, GoogleNewsPayload):
        cost += ADDON * ((payload.pages or 1) - 1)
    return cost
