"""AIMODE and COPILOT adapters against recorded SerpApi google_ai_mode / bing_copilot bodies."""

from __future__ import annotations

import httpx

from taskq.errors import Code

AIMODE = {"prompt": "how do heat pumps work", "country": "US", "hl": "en"}
COPILOT = {"prompt": "python asyncio gather vs taskgroup", "country": "GB"}


def test_aimode_request_uses_the_ai_mode_engine_with_locale(call, upstream, recorded) -> None:
    up = upstream(httpx.Response(200, json=recorded("serpapi_ai_mode.json")))
    call("AIMODE", {**AIMODE, "device": "mobile"}, up)
    assert dict(up.requests[0].url.params) == {
        "engine": "google_ai_mode",
        "q": "how do heat pumps work",
        "gl": "us",
        "hl": "en",
        "device": "mobile",
        "api_key": "sk-test",
    }


def test_aimode_text_flattens_blocks_and_references_become_sources(call, upstream, recorded) -> None:
    result = call("AIMODE", AIMODE, upstream(httpx.Response(200, json=recorded("serpapi_ai_mode.json"))))
    assert result["text"] == (
        "Heat pumps move heat instead of generating it.\n\nMain parts\n\n"
        "- Compressor: raises the refrigerant pressure.\n- Evaporator: absorbs outdoor heat.\n"
        "  - Works below freezing."
    )
    assert [(s["position"], s["label"]) for s in result["sources"]] == [
        (1, "How Heat Pumps Work | energy.gov"),
        (2, "Heat pump - Wikipedia"),
        (3, "Cold-climate heat pumps"),
    ]
    assert result["sources"][2]["description"] == ""
    assert "markdown" not in result


def test_aimode_markdown_links_each_block_to_its_references(call, upstream, recorded) -> None:
    payload = {**AIMODE, "include": {"markdown": True}}
    markdown = call("AIMODE", payload, upstream(httpx.Response(200, json=recorded("serpapi_ai_mode.json"))))[
        "markdown"
    ]
    assert markdown.splitlines()[0] == (
        "Heat pumps move heat instead of generating it. "
        "[1](https://www.energy.gov/heat-pumps) [2](https://en.wikipedia.org/wiki/Heat_pump)"
    )
    assert "## Main parts" in markdown
    assert "- Evaporator: absorbs outdoor heat. [3](https://www.nrel.gov/cold-climate)" in markdown


def test_aimode_falls_back_to_reconstructed_markdown_without_blocks(call, upstream, recorded) -> None:
    body = recorded("serpapi_ai_mode.json")
    del body["text_blocks"]
    result = call("AIMODE", AIMODE, upstream(httpx.Response(200, json=body)))
    assert result["text"] == body["reconstructed_markdown"]


def test_aimode_without_any_answer_is_an_invalid_response(fails, upstream) -> None:
    body = {"search_metadata": {"status": "Success"}, "references": []}
    error = fails("AIMODE", AIMODE, upstream(httpx.Response(200, json=body)))
    assert (error.code, error.retryable) == (Code.PROVIDER_INVALID_RESPONSE, False)


def test_copilot_sends_no_country_because_the_engine_has_none(call, upstream, recorded) -> None:
    up = upstream(httpx.Response(200, json=recorded("serpapi_bing_copilot.json")))
    call("COPILOT", COPILOT, up)
    assert dict(up.requests[0].url.params) == {
        "engine": "bing_copilot",
        "q": "python asyncio gather vs taskgroup",
        "api_key": "sk-test",
    }


def test_copilot_answer_renders_header_code_and_table(call, upstream, recorded) -> None:
    body = recorded("serpapi_bing_copilot.json")
    payload = {**COPILOT, "include": {"markdown": True, "rawResponse": True}}
    result = call("COPILOT", payload, upstream(httpx.Response(200, json=body)))
    assert result["text"].startswith("Comparing gather and TaskGroup\n\nTaskGroup cancels siblings")
    assert "gather | no" in result["text"]
    assert "```python\nasync with asyncio.TaskGroup() as tg:" in result["markdown"]
    assert "| API | Cancels on error |\n|---|---|\n| gather | no |" in result["markdown"]
    assert result["sources"] == [
        {
            "position": 1,
            "url": "https://docs.python.org/3/library/asyncio-task.html",
            "label": "asyncio — Coroutines and Tasks",
            "description": "TaskGroup ...",
        }
    ]
    assert result["rawResponse"] == [body]


def test_copilot_out_of_searches_fails_fast(fails, upstream) -> None:
    body = {"error": "Your account has run out of searches."}
    assert (
        fails("COPILOT", COPILOT, upstream(httpx.Response(429, json=body))).code
        == Code.PROVIDER_QUOTA_EXHAUSTED
    )
