"""CHATGPT adapter: OpenAI Responses API with the web_search tool, located by country."""

from __future__ import annotations

from typing import Any

import httpx

from taskq.providers import responses_api
from taskq.providers.base import ProviderConfig, bearer, boundary, json_object, narrow, send
from taskq.providers.render import Sources
from taskq.schemas.payloads import ChatGPTPayload, Payload

PROVIDER = "OpenAI"


def request_body(payload: ChatGPTPayload, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": payload.prompt, "store": False}
    if not payload.disableWebSearch:
        location: dict[str, str] = {"type": "approximate", "country": payload.country}
        if payload.state:
            location["region"] = payload.state
        body["tools"] = [{"type": "web_search", "user_location": location}]
        # cloro forces a search unless told not to; the include returns every URL the search consulted.
        body["tool_choice"] = "required"
        body["include"] = ["web_search_call.action.sources"]
    return body


async def run(payload: Payload, client: httpx.AsyncClient, config: ProviderConfig) -> dict[str, Any]:
    with boundary(PROVIDER):
        task = narrow(payload, ChatGPTPayload, PROVIDER)
        response = await send(
            client,
            PROVIDER,
            config,
            "POST",
            f"{config.base_url.rstrip('/')}/v1/responses",
            headers=bearer(config.api_key),
            json=request_body(task, config.model),
        )
        body = json_object(PROVIDER, response)
        answer = responses_api.parse(PROVIDER, body)

        # Cited sources first (footnote), then pages the search read but the answer did not cite.
        sources = Sources()
        for cite in answer.citations:
            sources.add(cite.url, cite.title, footnote=True)
        for url in answer.consulted:
            sources.add(url, footnote=False)

        result: dict[str, Any] = {
            "text": answer.text,
            "sources": sources.items,
            "model": answer.model or config.model,
        }
        if task.include.markdown:
            result["markdown"] = responses_api.markdown(answer, sources)
        if task.include.searchQueries and answer.queries:
            result["searchQueries"] = answer.queries
        if task.include.rawResponse:
            result["rawResponse"] = [body]
        return result
