"""GROK adapter against recorded xAI Responses bodies, including the 410 string error."""

from __future__ import annotations

import httpx

from taskq.errors import Code

PAYLOAD = {"prompt": "Mars rover news", "country": "FR"}
PERSEVERANCE = "https://science.nasa.gov/mission/mars-2020-perseverance/"
JPL = "https://www.jpl.nasa.gov/missions/msl"


def test_request_states_the_location_in_a_system_message(call, upstream, recorded) -> None:
    up = upstream(httpx.Response(200, json=recorded("xai_web_search.json")))
    call("GROK", PAYLOAD, up, model="grok-4-fast-non-reasoning")
    assert str(up.requests[0].url) == "https://upstream.test/v1/responses"
    body = up.last_json
    assert body["tools"] == [{"type": "web_search"}]
    assert body["input"][0]["role"] == "system" and "FR" in body["input"][0]["content"]
    assert body["input"][1] == {"role": "user", "content": "Mars rover news"}


def test_untitled_annotations_then_top_level_citations_become_sources(call, upstream, recorded) -> None:
    result = call("GROK", PAYLOAD, upstream(httpx.Response(200, json=recorded("xai_web_search.json"))))
    assert [(s["position"], s["url"], s["label"]) for s in result["sources"]] == [
        (1, PERSEVERANCE, "science.nasa.gov"),
        (2, JPL, "Curiosity | JPL"),
        (3, "https://x.com/NASAPersevere/status/1", "x.com"),
    ]
    assert result["searchQueries"] == ["latest Mars rover news"]
    assert result["model"] == "grok-4-fast-non-reasoning"


def test_markdown_keeps_inline_citations_and_adds_the_source_list(call, upstream, recorded) -> None:
    body = recorded("xai_web_search.json")
    result = call(
        "GROK", {**PAYLOAD, "include": {"markdown": True}}, upstream(httpx.Response(200, json=body))
    )
    text, markdown = result["text"], result["markdown"]
    assert markdown.startswith(text)
    assert markdown.endswith("3. [x.com](https://x.com/NASAPersevere/status/1)")


def test_410_plain_string_error_is_rejected_with_its_message(fails, upstream) -> None:
    body = {"error": "Live search is deprecated. Please switch to the Agent Tools API."}
    error = fails("GROK", PAYLOAD, upstream(httpx.Response(410, json=body)))
    assert (error.code, error.retryable, error.status) == (Code.PROVIDER_REJECTED, False, 410)
    assert (
        error.message == "xAI returned 410: Live search is deprecated. Please switch to the Agent Tools API."
    )


def test_incorrect_key_400_is_an_auth_failure(fails, upstream) -> None:
    body = {"code": "Client specified an invalid argument", "error": "Incorrect API key provided: xa***90."}
    assert fails("GROK", PAYLOAD, upstream(httpx.Response(400, json=body))).code == Code.PROVIDER_AUTH_FAILED


def test_rate_limit_429_is_retryable(fails, upstream) -> None:
    error = fails("GROK", PAYLOAD, upstream(httpx.Response(429, json={"error": "Too many requests"})))
    assert (error.code, error.retryable) == (Code.PROVIDER_RATE_LIMITED, True)


def test_message_without_text_is_an_invalid_response(fails, upstream, recorded) -> None:
    body = recorded("xai_web_search.json")
    body["output"][1]["content"][0]["text"] = ""
    assert (
        fails("GROK", PAYLOAD, upstream(httpx.Response(200, json=body))).code
        == Code.PROVIDER_INVALID_RESPONSE
    )
