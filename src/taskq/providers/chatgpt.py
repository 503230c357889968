"""CHATGPT adapter: OpenAI Responses API with the web_search tool, located by country."""

from __future__ import annotations

from typing import Any

import httpx

from taskq.providers import responses_api
from taskq.providers.base import ProviderConfig, boundary, narrow
from taskq.providers.render import Sources
from taskq.providers.spec import ProviderSpec, Upstream
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
        body, answer = await responses_api.call(PROVIDER, client, config, request_body(task, config.model))

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


SPEC = ProviderSpec(
    task_type="CHATGPT",
    payload=ChatGPTPayload,
    run=run,
    upstream=Upstream("openai", "https://api.openai.com", model="gpt-5-mini"),
    price=5,
    timeout=180.0,  # a reasoning model searching the web can take minutes
)
