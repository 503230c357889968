"""Reading the OpenAI Responses body shape, which OpenAI (CHATGPT) and xAI (GROK) both return."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from taskq.errors import Code
from taskq.providers.base import ProviderConfig, ProviderError, bearer, invalid, json_object, send
from taskq.providers.render import Sources, with_citations


@dataclass
class Citation:
    url: str
    title: str | None
    start: int | None
    end: int | None


@dataclass
class Answer:
    text: str
    citations: list[Citation] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    consulted: list[str] = field(default_factory=list)
    model: str = ""


async def call(
    provider: str, client: httpx.AsyncClient, config: ProviderConfig, request: dict[str, Any]
) -> tuple[dict[str, Any], Answer]:
    """POST a Responses API request (OpenAI and xAI share the format); the body and its answer."""
    response = await send(
        client,
        provider,
        config,
        "POST",
        f"{config.base_url.rstrip('/')}/v1/responses",
        headers=bearer(config.api_key),
        json=request,
    )
    body = json_object(provider, response)
    return body, parse(provider, body)


def parse(provider: str, body: dict[str, Any]) -> Answer:
    """The joined output_text parts, their url_citation annotations and the web searches run."""
    status = body.get("status")
    if status == "failed":
        raise _failed(provider, body.get("error"))
    if status in ("queued", "in_progress"):
        raise invalid(provider, f"response still {status}")
    output = body.get("output")
    if not isinstance(output, list):
        raise invalid(provider, "no output array")

    answer = Answer(text="", model=str(body.get("model") or ""))
    refusals: list[str] = []
    for item in output:
        kind = item.get("type")
        if kind == "web_search_call":
            _searches(item, answer)
        elif kind == "message":
            for part in item.get("content") or []:
                if part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal") or ""))
                elif part.get("type") == "output_text":
                    _append_text(provider, part, answer)
    if not answer.text.strip():
        raise _no_answer(provider, refusals, (body.get("incomplete_details") or {}).get("reason"))
    return answer


def _append_text(provider: str, part: dict[str, Any], answer: Answer) -> None:
    """Add one output_text part; its annotation indices are relative to the part, so shift them."""
    text = part["text"]
    if not isinstance(text, str):
        raise invalid(provider, "output_text.text is not a string")
    offset = len(answer.text)
    for note in part.get("annotations") or []:
        if note.get("type") == "url_citation" and note.get("url"):
            start, end = note.get("start_index"), note.get("end_index")
            answer.citations.append(
                Citation(
                    url=str(note["url"]),
                    title=note.get("title") or None,
                    start=start + offset if isinstance(start, int) else None,
                    end=end + offset if isinstance(end, int) else None,
                )
            )
    answer.text += text


def _no_answer(provider: str, refusals: list[str], incomplete: Any) -> ProviderError:
    if refusals:
        return ProviderError(
            Code.PROVIDER_REJECTED, f"{provider} refused: {' '.join(refusals)[:300]}", retryable=False
        )
    if incomplete:
        return ProviderError(
            Code.PROVIDER_REJECTED,
            f"{provider} returned no answer (incomplete: {incomplete})",
            retryable=False,
        )
    return invalid(provider, "no output_text in any message")


def _searches(item: dict[str, Any], answer: Answer) -> None:
    """Queries and consulted URLs: OpenAI has action{query,queries,sources}, xAI an arguments JSON string."""
    action = item.get("action")
    if not isinstance(action, dict):
        action = {}
        if isinstance(item.get("arguments"), str):
            try:
                parsed = json.loads(item["arguments"])
            except ValueError:
                parsed = None
            action = parsed if isinstance(parsed, dict) else {}
    queries = [action.get("query"), *(action.get("queries") or [])]
    for query in queries:
        if isinstance(query, str) and query and query not in answer.queries:
            answer.queries.append(query)
    for source in action.get("sources") or []:
        if isinstance(source, dict) and source.get("url"):
            answer.consulted.append(str(source["url"]))


def _failed(provider: str, error: Any) -> ProviderError:
    """A 200 carrying status "failed": classify by error.code like the HTTP errors."""
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or "unknown")
    message = f"{provider} response failed with {code}: {error.get('message') or 'no message'}"
    if code == "rate_limit_exceeded":
        return ProviderError(Code.PROVIDER_RATE_LIMITED, message, retryable=True)
    if code in ("server_error", "unknown"):
        return ProviderError(Code.PROVIDER_UNAVAILABLE, message, retryable=True)
    return ProviderError(Code.PROVIDER_REJECTED, message, retryable=False)


def markdown(answer: Answer, sources: Sources) -> str:
    """The answer as markdown: citations the text does not already link get a [n](url) after their span."""
    marks = []
    for cite in answer.citations:
        if cite.end is None:
            continue
        if cite.start is not None and cite.url in answer.text[cite.start : cite.end]:
            continue
        marks.append((cite.end, sources.add(cite.url, cite.title)))
    return with_citations(answer.text, marks, sources)
