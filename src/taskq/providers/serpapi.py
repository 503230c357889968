"""SerpApi search.json calls shared by GOOGLE, AIMODE and COPILOT: auth, location params, body status."""

from __future__ import annotations

from typing import Any

import httpx

from taskq.errors import Code
from taskq.providers.base import ProviderConfig, ProviderError, json_object, send
from taskq.providers.render import Sources, text_blocks
from taskq.providers.spec import Upstream

PROVIDER = "SerpApi"
UPSTREAM = Upstream("serpapi", "https://serpapi.com")
#: Google's own country codes differ from ISO 3166 in a few places.
_GL_OVERRIDES = {"gb": "uk"}
_NO_RESULTS = "hasn't returned any results"


def gl(country: str) -> str:
    """The Google gl value of an ISO country code: lowercase, GB→uk."""
    lowered = country.lower()
    return _GL_OVERRIDES.get(lowered, lowered)


def locale_params(
    region: str, hl: str | None, location: str | None, uule: str | None, device: str
) -> dict[str, str]:
    params = {"gl": gl(region)} if region else {}
    if hl:
        params["hl"] = hl
    if location:
        params["location"] = location
    if uule:
        params["uule"] = uule
    # SerpApi knows desktop, tablet and mobile; ios and android are both phones.
    params["device"] = "desktop" if device == "desktop" else "mobile"
    return params


async def search(client: httpx.AsyncClient, config: ProviderConfig, params: dict[str, str]) -> dict[str, Any]:
    """GET search.json; a 200 whose search failed is retryable, one that found nothing is an empty success."""
    response = await send(
        client,
        PROVIDER,
        config,
        "GET",
        f"{config.base_url.rstrip('/')}/search.json",
        params={**params, "api_key": config.api_key},
    )
    body = json_object(PROVIDER, response)
    error = body.get("error")
    status = (body.get("search_metadata") or {}).get("status")
    if error and _NO_RESULTS not in str(error):
        raise ProviderError(
            Code.PROVIDER_UNAVAILABLE,
            f"{PROVIDER} search failed ({status}): {error}",
            retryable=True,
            status=200,
        )
    return body


def answer_blocks(body: dict[str, Any], engine: str) -> tuple[str, str, Sources]:
    """(text, markdown, sources) of an AI answer given as text_blocks + references (AI Mode, Copilot)."""
    sources = Sources()
    refs: dict[Any, int] = {}
    for i, ref in enumerate(body.get("references") or []):
        if isinstance(ref, dict) and ref.get("link"):
            position = sources.add(
                str(ref["link"]), ref.get("title") or ref.get("source"), ref.get("snippet")
            )
            refs[ref.get("index", i)] = position
    text, markdown = text_blocks(body.get("text_blocks"), refs, sources)
    header = body.get("header")
    if isinstance(header, str) and header.strip():
        text, markdown = f"{header}\n\n{text}".strip(), f"{header}\n\n{markdown}".strip()
    # Blocks carry reference_indexes, so prefer them; SerpApi's reconstructed_markdown is the fallback.
    reconstructed = body.get("reconstructed_markdown")
    if not text.strip() and isinstance(reconstructed, str):
        text = markdown = reconstructed
    if not text.strip():
        raise ProviderError(
            Code.PROVIDER_INVALID_RESPONSE,
            f"{PROVIDER} {engine} returned no answer (no text_blocks)",
            retryable=False,
        )
    return text, markdown, sources
