"""PERPLEXITY adapter: Sonar chat completions; sources from search_results, else the citations URLs."""

from __future__ import annotations

import re
from typing import Any

import httpx

from taskq.providers.base import ProviderConfig, bearer, boundary, invalid, json_object, narrow, send
from taskq.providers.render import Sources, link, source_list
from taskq.providers.spec import ProviderSpec, Upstream
from taskq.schemas.payloads import Payload, PerplexityPayload

PROVIDER = "Perplexity"
_THINK = re.compile(r"<think>.*?(</think>|$)\s*", re.DOTALL)
_MARKER = re.compile(r"\[(\d{1,3})\](?!\()")


def request_body(payload: PerplexityPayload, model: str) -> dict[str, Any]:
    location: dict[str, str] = {"country": payload.country}
    if payload.state:
        location["region"] = payload.state
    return {
        "model": model,
        "messages": [{"role": "user", "content": payload.prompt}],
        "web_search_options": {"search_context_size": "medium", "user_location": location},
    }


async def run(payload: Payload, client: httpx.AsyncClient, config: ProviderConfig) -> dict[str, Any]:
    with boundary(PROVIDER):
        task = narrow(payload, PerplexityPayload, PROVIDER)
        response = await send(
            client,
            PROVIDER,
            config,
            "POST",
            f"{config.base_url.rstrip('/')}/chat/completions",
            headers=bearer(config.api_key),
            json=request_body(task, config.model),
        )
        body = json_object(PROVIDER, response)
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise invalid(PROVIDER, "no choices")
        content = (choices[0].get("message") or {}).get("content")
        if not isinstance(content, str):
            raise invalid(PROVIDER, "choices[0].message.content is missing")
        # sonar-reasoning models open with a <think> block that is not part of the answer.
        text = _THINK.sub("", content).strip()
        if not text:
            raise invalid(PROVIDER, "empty answer")

        # The [n] markers in the text index this list (1-based), so keep its order and length.
        cited: list[str] = []
        sources = Sources()
        search_results = body.get("search_results")
        if isinstance(search_results, list) and search_results:
            for item in search_results:
                cited.append(str(item["url"]))
                extra = {"date": item["date"]} if item.get("date") else {}
                sources.add(str(item["url"]), item.get("title"), item.get("snippet"), **extra)
        else:
            for url in body.get("citations") or []:
                cited.append(str(url))
                sources.add(str(url))

        result: dict[str, Any] = {
            "text": text,
            "sources": sources.items,
            "model": str(body.get("model") or config.model),
        }
        if task.include.markdown:
            result["markdown"] = _markdown(text, cited, sources)
        if task.include.rawResponse:
            result["rawResponse"] = [body]
        return result


def _markdown(text: str, cited: list[str], sources: Sources) -> str:
    def swap(match: re.Match[str]) -> str:
        n = int(match.group(1))
        return link(str(n), cited[n - 1]) if 1 <= n <= len(cited) else match.group(0)

    linked = _MARKER.sub(swap, text)
    return f"{linked}\n\n{source_list(sources)}" if len(sources) else linked


SPEC = ProviderSpec(
    task_type="PERPLEXITY",
    payload=PerplexityPayload,
    run=run,
    upstream=Upstream("perplexity", "https://api.perplexity.ai", model="sonar"),
    price=4,
    timeout=120.0,
)
