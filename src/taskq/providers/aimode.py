"""AIMODE adapter: Google AI Mode through SerpApi engine=google_ai_mode (text_blocks + references)."""

from __future__ import annotations

from typing import Any

import httpx

from taskq.providers import serpapi
from taskq.providers.base import ProviderConfig, boundary, narrow
from taskq.providers.spec import ProviderSpec
from taskq.schemas.payloads import AIModePayload, Payload

PROVIDER = "SerpApi"


def request_params(payload: AIModePayload) -> dict[str, str]:
    return {
        "engine": "google_ai_mode",
        "q": payload.prompt,
        **serpapi.locale_params(payload.region(), payload.hl, payload.location, payload.uule, payload.device),
    }


async def run(payload: Payload, client: httpx.AsyncClient, config: ProviderConfig) -> dict[str, Any]:
    with boundary(PROVIDER):
        task = narrow(payload, AIModePayload, PROVIDER)
        body = await serpapi.search(client, config, request_params(task))
        text, markdown, sources = serpapi.answer_blocks(body, "google_ai_mode")
        result: dict[str, Any] = {"text": text, "sources": sources.items}
        if task.include.markdown:
            result["markdown"] = markdown
        return result


SPEC = ProviderSpec(
    task_type="AIMODE",
    payload=AIModePayload,
    run=run,
    upstream=serpapi.UPSTREAM,
    price=4,
    timeout=60.0,  # AI Mode through SerpApi answers in seconds
)
