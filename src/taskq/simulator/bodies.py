"""Canned upstream bodies for the provider simulator: successes and failures in each provider's wire shape."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

MARK = "[simulated]"
_DOMAINS = ("example.com", "example.org", "news.example.net", "wiki.example.edu", "shop.example.co.uk")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ask:
    """What the simulator read from a request: the text to answer and the knobs that shape the answer."""

    flavor: str  # openai | xai | gemini | perplexity | serpapi | rss
    text: str
    model: str = ""
    country: str = ""
    params: dict[str, str] = field(default_factory=dict)
    empty: bool = False
    echo: dict[str, Any] = field(default_factory=dict)  # request fields the answer repeats (OpenAI: tools)


def json_reply(status: int, body: Any, **headers: str) -> Reply:
    return Reply(status, json.dumps(body, ensure_ascii=False).encode(), headers=headers)


def _id(ask: Ask) -> str:
    return hashlib.sha1(f"{ask.flavor}:{ask.text}".encode()).hexdigest()[:16]


def _urls(ask: Ask, n: int) -> list[str]:
    slug = _id(ask)[:8]
    return [f"https://{_DOMAINS[i % len(_DOMAINS)]}/articles/{slug}-{i + 1}" for i in range(n)]


def _short(text: str) -> str:
    return " ".join(text.split())[:80]


def success(ask: Ask) -> Reply:
    builder = {
        "openai": _responses,
        "xai": _responses,
        "gemini": _gemini,
        "perplexity": _perplexity,
        "serpapi": _serpapi,
        "rss": _rss,
    }[ask.flavor]
    return builder(ask)


def _responses(ask: Ask) -> Reply:
    """OpenAI Responses body; the xAI flavor has untitled, unindexed annotations plus top-level citations."""
    urls = _urls(ask, 3)
    xai = ask.flavor == "xai"
    text = f"{MARK} Answer to “{_short(ask.text)}” for country {ask.country or 'unknown'}."
    annotations: list[dict[str, Any]] = []
    for i, url in enumerate(urls[:2]):
        cite = f" [[{i + 1}]]({url})" if xai else f" ([{_DOMAINS[i]}]({url}))"
        sentence = f" Finding {i + 1} is supported by a source."
        text += sentence
        start = len(text) - 1
        text = text[:start] + cite + "."
        note: dict[str, Any] = {"type": "url_citation", "url": url}
        if not xai or i == 0:
            note |= {
                "title": f"Source {i + 1} on {_DOMAINS[i]}",
                "start_index": start,
                "end_index": start + len(cite),
            }
        annotations.append(note)
    query = _short(ask.text)
    search: dict[str, Any] = {"type": "web_search_call", "id": f"ws_{_id(ask)}", "status": "completed"}
    reasoning = {"type": "reasoning", "id": f"rs_{_id(ask)}", "summary": []}
    if xai:
        search |= {"name": "web_search", "arguments": json.dumps({"query": query})}
    else:
        search["action"] = {
            "type": "search",
            "query": query,
            "sources": [{"type": "url", "url": u} for u in urls],
        }
    message = {
        "type": "message",
        "id": f"msg_{_id(ask)}",
        "status": "completed",
        "role": "assistant",
        "content": [
            {
                "type": "output_text",
                "text": "" if ask.empty else text,
                "annotations": [] if ask.empty else annotations,
                "logprobs": [],
            }
        ],
    }
    body: dict[str, Any] = {
        "id": f"resp_{_id(ask)}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": ask.model,
        "output": [search, message] if xai else [reasoning, search, message],
    }
    if xai:
        body["citations"] = urls
        body["usage"] = {"input_tokens": 12, "output_tokens": 48, "total_tokens": 60, "num_sources_used": 3}
    else:
        body |= _openai_fields(ask)
    return json_reply(200, body, **{"x-request-id": f"req_{_id(ask)}", "openai-processing-ms": "1"})


def _openai_fields(ask: Ask) -> dict[str, Any]:
    """The rest of an OpenAI Responses body: the request's settings repeated, usage with its details."""
    return {
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "metadata": {},
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": None},
        "service_tier": "default",
        "store": bool(ask.echo.get("store", True)),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": ask.echo.get("tool_choice", "auto"),
        "tools": ask.echo.get("tools", []),
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 12,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 48,
            "output_tokens_details": {"reasoning_tokens": 16},
            "total_tokens": 60,
        },
        "user": None,
    }


def _gemini(ask: Ask) -> Reply:
    """Multi-byte answer text; groundingSupports carry UTF-8 byte offsets into the answer part."""
    sentences = [
        f"{MARK} Résumé for “{_short(ask.text)}” ({ask.country or 'no location'}).",
        " Naïve café culture in 東京 is well documented 🙂.",
        " München\u2019s Straße names keep their ß.",
    ]
    text = "".join(sentences)
    urls = _urls(ask, 2)
    supports = []
    for i, sentence in enumerate(sentences[1:]):
        start = len("".join(sentences[: i + 1]).encode())
        end = start + len(sentence.encode())
        supports.append(
            {
                "segment": {"partIndex": 1, "startIndex": start, "endIndex": end, "text": sentence.strip()},
                "groundingChunkIndices": [i],
                "confidenceScores": [0.9],
            }
        )
    candidate: dict[str, Any] = {
        "content": {
            "role": "model",
            "parts": [{"text": "Thinking about sources.", "thought": True}, {"text": text}],
        },
        "finishReason": "STOP",
        "index": 0,
    }
    if not ask.empty:
        # A "[sim:empty]" Gemini answer is the real-world variant with no groundingMetadata at all.
        candidate["groundingMetadata"] = {
            "webSearchQueries": [_short(ask.text)],
            "groundingChunks": [
                {
                    "web": {
                        "uri": f"https://vertexaisearch.cloud.google.com/grounding-api-redirect/{_id(ask)}{i}",
                        "title": _DOMAINS[i],
                    }
                }
                for i in range(len(urls))
            ],
            "groundingSupports": supports,
            "searchEntryPoint": {"renderedContent": "<div>[simulated] search suggestions</div>"},
        }
    return json_reply(
        200,
        {
            "candidates": [candidate],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 40, "totalTokenCount": 50},
            "modelVersion": ask.model,
            "responseId": _id(ask),
        },
    )


def _perplexity(ask: Ask) -> Reply:
    urls = _urls(ask, 3)
    think = "<think>[simulated] weighing sources</think>\n" if "reasoning" in ask.model else ""
    content = f"{think}{MARK} Answer to “{_short(ask.text)}” in {ask.country} [1]. More detail [2][3]."
    return json_reply(
        200,
        {
            "id": _id(ask),
            "model": ask.model,
            "created": int(time.time()),
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "" if ask.empty else content},
                    "delta": {"role": "assistant", "content": ""},
                }
            ],
            "citations": urls,
            "search_results": [
                {
                    "title": f"Source {i + 1}",
                    "url": u,
                    "date": f"2026-01-0{i + 1}",
                    "snippet": f"{MARK} snippet",
                }
                for i, u in enumerate(urls)
            ],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 40,
                "total_tokens": 50,
                "search_context_size": "medium",
                "cost": {
                    "input_tokens_cost": 0.0,
                    "output_tokens_cost": 0.0,
                    "request_cost": 0.005,
                    "total_cost": 0.005,
                },
            },
        },
    )


def _serpapi(ask: Ask) -> Reply:
    engine = ask.params.get("engine", "google")
    meta = {"id": _id(ask), "status": "Success", "total_time_taken": 0.01}
    body: dict[str, Any] = {"search_metadata": meta, "search_parameters": {**ask.params, "simulated": True}}
    query = _short(ask.text)
    urls = _urls(ask, 4)
    refs = [
        {
            "index": i,
            "title": f"Reference {i + 1}",
            "link": u,
            "snippet": f"{MARK} snippet",
            "source": _DOMAINS[i],
        }
        for i, u in enumerate(urls)
    ]
    blocks = [
        {"type": "heading", "snippet": f"{MARK} About {query}"},
        {"type": "paragraph", "snippet": f"{MARK} Overview for {query}.", "reference_indexes": [0, 1]},
        {
            "type": "list",
            "list": [
                {"snippet": "First point.", "reference_indexes": [2]},
                {"snippet": "Second point.", "reference_indexes": [3]},
            ],
        },
    ]
    if ask.empty and engine == "google":
        body["error"] = "Google hasn't returned any results for this query."
    elif ask.empty:
        pass
    elif engine == "google":
        start = int(ask.params.get("start") or 0)
        body["search_information"] = {"total_results": 1234}
        body["organic_results"] = [
            {
                "position": start + i + 1,
                "title": f"{MARK} Result {start + i + 1} for {query}",
                "link": f"https://{_DOMAINS[i % 5]}/r/{_id(ask)[:8]}-{start + i + 1}",
                "displayed_link": f"https://{_DOMAINS[i % 5]} \u203a r",
                "snippet": f"{MARK} Snippet {start + i + 1}.",
                "source": _DOMAINS[i % 5],
            }
            for i in range(10)
        ]
        if start == 0:
            body["ai_overview"] = {"text_blocks": blocks[1:2], "references": refs[:2]}
    elif engine == "google_ai_mode":
        body |= {"text_blocks": blocks, "references": refs}
        body["reconstructed_markdown"] = f"## {MARK} About {query}\n\n{MARK} Overview for {query}. [1][2]"
    else:  # bing_copilot
        body |= {"header": f"{MARK} Copilot on {query}", "text_blocks": blocks[1:], "references": refs}
    return json_reply(200, body)


def _rss(ask: Ask) -> Reply:
    now = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    country = ask.params.get("gl", "US")
    items = []
    for i in range(0 if ask.empty else 25):
        publisher = f"Publisher {i % 7 + 1}"
        headline = f"{MARK} Headline {i + 1} about {_short(ask.text)}"
        link = f"https://news.google.com/rss/articles/CBMi{_id(ask)}{i:03d}?oc=5"
        description = (
            f'<a href="{link}" target="_blank">{headline}</a>&nbsp;&nbsp;'
            f'<font color="#6f6f6f">{publisher}</font>'
        )
        items.append(
            "<item>"
            f"<title>{escape(f'{headline} - {publisher}')}</title>"
            f"<link>{escape(link)}</link>"
            f'<guid isPermaLink="false">{_id(ask)}{i}</guid>'
            f"<pubDate>{format_datetime(now - timedelta(hours=i), usegmt=True)}</pubDate>"
            f"<description>{escape(description)}</description>"
            f"<source url={quoteattr(f'https://publisher{i % 7 + 1}.example')}>{escape(publisher)}</source>"
            "</item>"
        )
    xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel>'
        f"<title>{escape(f'{_short(ask.text)} - Google News {MARK}')}</title>"
        f"<link>https://news.google.com/search?gl={escape(country)}</link>"
        f"<language>{escape(ask.params.get('hl', 'en-US'))}</language>"
        f"<description>{MARK} Google News</description>{''.join(items)}</channel></rss>"
    )
    return Reply(200, xml.encode(), content_type="application/xml")
