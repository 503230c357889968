"""GROK adapter: xAI Responses API with the web_search tool; the country goes in a system message."""

from __future__ import annotations

from typing import Any

import httpx

from taskq.providers import responses_api
from taskq.providers.base import ProviderConfig, boundary, narrow
from taskq.providers.render import Sources
from taskq.providers.spec import ProviderSpec, Upstream
from taskq.schemas.payloads import GrokPayload, Payload

PROVIDER = "xAI"


def request_body(payload: GrokPayload, model: str) -> dict[str, Any]:
    # xAI's web_search tool has no location option, so the location is stated to the model instead.
    where = f"{payload.state}, {payload.country}" if payload.state else payload.country
    return {
        "model": model,
        "input": [
            {"role": "system", "content": f"The user is located in {where} (ISO country code)."},
            {"role": "user", "content": payload.prompt},
        ],
        "tools": [{"type": "web_search"}],
        "store": False,
    }


async def run(payload: Payload, client: httpx.AsyncClient, config: ProviderConfig) -> dict[str, Any]:
    with boundary(PROVIDER):
        task = narrow(payload, GrokPayload, PROVIDER)
        body, answer = await responses_api.call(PROVIDER, client, config, request_body(task, config.model))

        # Annotations (may lack title and indices) first, then every URL in top-level citations.
        sources = Sources()
        for cite in answer.citations:
            sources.add(cite.url, cite.title)
        for url in body.get("citations") or []:
            if isinstance(url, str) and url:
                sources.add(url)

        result: dict[str, Any] = {
            "text": answer.text,
            "sources": sources.items,
            "model": answer.model or config.model,
        }
        if task.include.markdown:
            result["markdown"] = responses_api.markdown(answer, sources)
        if answer.queries:
            result["searchQueries"] = answer.queries
        if task.include.rawResponse:
            result["rawResponse"] = [body]
        return result


SPEC = ProviderSpec(
    task_type="GROK",
    payload=GrokPayload,
    run=run,
    upstream=Upstream("xai", "https://api.x.ai", model="grok-4-fast-non-reasoning"),
    price=4,
    timeout=120.0,
)
