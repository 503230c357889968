"""GEMINI adapter: generateContent with google_search grounding; citation offsets are UTF-8 byte offsets."""

from __future__ import annotations

from typing import Any

import httpx

from taskq.errors import Code
from taskq.providers.base import ProviderConfig, ProviderError, boundary, invalid, json_object, narrow, send
from taskq.providers.render import Sources, char_offset, with_citations
from taskq.providers.spec import ProviderSpec, Upstream
from taskq.schemas.payloads import GeminiPayload, Payload

PROVIDER = "Gemini"
_BLOCKED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "LANGUAGE"})


def request_body(payload: GeminiPayload) -> dict[str, Any]:
    # The google_search tool has no country option; a system instruction localizes the answer instead.
    where = f"{payload.state}, {payload.country}" if payload.state else payload.country
    return {
        "contents": [{"role": "user", "parts": [{"text": payload.prompt}]}],
        "tools": [{"google_search": {}}],
        "systemInstruction": {"parts": [{"text": f"The user is located in {where} (ISO country code)."}]},
    }


async def run(payload: Payload, client: httpx.AsyncClient, config: ProviderConfig) -> dict[str, Any]:
    with boundary(PROVIDER):
        task = narrow(payload, GeminiPayload, PROVIDER)
        response = await send(
            client,
            PROVIDER,
            config,
            "POST",
            f"{config.base_url.rstrip('/')}/v1beta/models/{config.model}:generateContent",
            headers={"x-goog-api-key": config.api_key},
            json=request_body(task),
        )
        body = json_object(PROVIDER, response)
        candidate = _candidate(body)
        parts = (candidate.get("content") or {}).get("parts") or []
        # Keep each answer part's index: groundingSupports address text by (partIndex, byte offset).
        texts = {
            i: p["text"]
            for i, p in enumerate(parts)
            if isinstance(p.get("text"), str) and not p.get("thought")
        }
        text = "".join(texts.values())
        if not text.strip():
            reason = candidate.get("finishReason")
            if reason in _BLOCKED:
                raise ProviderError(
                    Code.PROVIDER_REJECTED, f"{PROVIDER} withheld the answer ({reason})", retryable=False
                )
            raise invalid(PROVIDER, f"no answer text (finishReason {reason})")

        # No groundingMetadata happens even after a search: a valid answer with no sources.
        grounding = candidate.get("groundingMetadata") or {}
        sources = Sources()
        chunk_position: dict[int, int] = {}
        for i, chunk in enumerate(grounding.get("groundingChunks") or []):
            web = chunk.get("web") or {}
            if web.get("uri"):
                chunk_position[i] = sources.add(str(web["uri"]), web.get("title"))

        result: dict[str, Any] = {
            "text": text,
            "sources": sources.items,
            "model": str(body.get("modelVersion") or config.model),
        }
        if task.include.markdown:
            marks = _marks(texts, grounding.get("groundingSupports") or [], chunk_position)
            result["markdown"] = with_citations(text, marks, sources)
        queries = [q for q in grounding.get("webSearchQueries") or [] if isinstance(q, str)]
        if queries:
            result["searchQueries"] = queries
        if task.include.rawResponse:
            result["rawResponse"] = [body]
        return result


def _candidate(body: dict[str, Any]) -> dict[str, Any]:
    candidates = body.get("candidates")
    if not candidates:
        blocked = (body.get("promptFeedback") or {}).get("blockReason")
        if blocked:
            raise ProviderError(
                Code.PROVIDER_REJECTED, f"{PROVIDER} blocked the prompt ({blocked})", retryable=False
            )
        raise invalid(PROVIDER, "no candidates")
    candidate = candidates[0]
    if not isinstance(candidate, dict):
        raise invalid(PROVIDER, "candidates[0] is not an object")
    return candidate


def _marks(
    texts: dict[int, str], supports: list[Any], chunk_position: dict[int, int]
) -> list[tuple[int, int]]:
    """(character offset in the joined text, source position) for the end of every grounded segment."""
    base: dict[int, int] = {}
    encoded: dict[int, bytes] = {}
    total = 0
    for index, text in texts.items():
        base[index] = total
        encoded[index] = text.encode("utf-8")
        total += len(text)
    marks = []
    for support in supports:
        segment = support.get("segment") or {}
        part = segment.get("partIndex", 0)
        end = segment.get("endIndex")
        if part not in encoded or not isinstance(end, int):
            continue
        at = base[part] + char_offset(encoded[part], end)
        for chunk in support.get("groundingChunkIndices") or []:
            if chunk in chunk_position:
                marks.append((at, chunk_position[chunk]))
    return marks


SPEC = ProviderSpec(
    task_type="GEMINI",
    payload=GeminiPayload,
    run=run,
    upstream=Upstream("gemini", "https://generativelanguage.googleapis.com", model="gemini-2.5-flash"),
    price=4,
    timeout=120.0,
)
