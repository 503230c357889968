"""GOOGLE adapter: organic web results through SerpApi engine=google, one call per requested page."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from taskq.errors import Code
from taskq.providers import serpapi
from taskq.providers.base import ProviderConfig, ProviderError, boundary, narrow
from taskq.providers.spec import ProviderSpec
from taskq.schemas.payloads import GooglePayload, Payload

PROVIDER = "SerpApi"
PAGE_SIZE = 10
#: Query parameters of a Google /search URL that SerpApi accepts under the same name.
_URL_PARAMS = ("q", "gl", "hl", "start", "num", "tbs", "safe", "lr", "cr", "filter", "uule", "location")


def page_params(payload: GooglePayload) -> list[dict[str, str]]:
    """The SerpApi parameters of each page to fetch: pages → start offsets 0, 10, 20, ..."""
    if payload.url is not None:
        return [_url_params(payload)]
    assert payload.query is not None  # the payload model requires query when url is absent
    base = {
        "engine": "google",
        "q": payload.query,
        **serpapi.locale_params(payload.region(), payload.hl, payload.location, payload.uule, payload.device),
    }
    pages = payload.pages or 1
    return [base if page == 0 else {**base, "start": str(page * PAGE_SIZE)} for page in range(pages)]


def _url_params(payload: GooglePayload) -> dict[str, str]:
    """url mode: replay the Google search URL's own parameters; payload country/hl win over the URL's."""
    assert payload.url is not None
    parts = urlsplit(payload.url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items() if k in _URL_PARAMS and v}
    if not query.get("q"):
        raise ProviderError(Code.PROVIDER_REJECTED, "the Google URL has no q parameter", retryable=False)
    params = {"engine": "google", **query}
    host = (parts.hostname or "").removeprefix("www.")
    if host and host != "google.com":
        params["google_domain"] = host
    if payload.region():
        params["gl"] = serpapi.gl(payload.region())
    elif "gl" in params:
        params["gl"] = serpapi.gl(params["gl"])
    if payload.hl:
        params["hl"] = payload.hl
    params["device"] = "desktop" if payload.device == "desktop" else "mobile"
    return params


async def run(payload: Payload, client: httpx.AsyncClient, config: ProviderConfig) -> dict[str, Any]:
    with boundary(PROVIDER):
        task = narrow(payload, GooglePayload, PROVIDER)
        calls = [asyncio.ensure_future(serpapi.search(client, config, p)) for p in page_params(task)]
        try:
            bodies = await asyncio.gather(*calls)
        except BaseException:
            # One failed page fails the task; do not leave the other pages running.
            for call in calls:
                call.cancel()
            raise

        organic: list[dict[str, Any]] = []
        for page, body in enumerate(bodies, start=1):
            for item in body.get("organic_results") or []:
                organic.append(
                    {
                        "position": len(organic) + 1,
                        "title": str(item.get("title") or ""),
                        "link": str(item["link"]),
                        "displayedLink": str(item.get("displayed_link") or ""),
                        "snippet": str(item.get("snippet") or ""),
                        "page": page,
                    }
                )
        result: dict[str, Any] = {"text": _summary(organic), "organicResults": organic}
        overview = _aioverview(bodies[0], task)
        if overview:
            result["aioverview"] = overview
        return result


def _summary(organic: list[dict[str, Any]]) -> str:
    lines = []
    for item in organic:
        lines.append(f"{item['position']}. {item['title']} ({item['displayedLink'] or item['link']})")
        if item["snippet"]:
            lines.append(f"   {item['snippet']}")
    return "\n".join(lines)


def _aioverview(body: dict[str, Any], task: GooglePayload) -> dict[str, Any] | None:
    """The AI Overview when requested and inline; one that needs a page_token follow-up is left out."""
    overview = body.get("ai_overview")
    if task.include.aioverview is None or not isinstance(overview, dict) or not overview.get("text_blocks"):
        return None
    text, markdown, sources = serpapi.answer_blocks(overview, "google ai_overview")
    result: dict[str, Any] = {"text": text, "sources": sources.items}
    if task.include.aioverview.markdown:
        result["markdown"] = markdown
    return result


SPEC = ProviderSpec(
    task_type="GOOGLE",
    payload=GooglePayload,
    run=run,
    upstream=serpapi.UPSTREAM,
    price=3,
    timeout=60.0,
)
