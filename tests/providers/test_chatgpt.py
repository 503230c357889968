"""CHATGPT adapter against recorded OpenAI Responses bodies."""

from __future__ import annotations

import httpx

from taskq.errors import Code

PAYLOAD = {"prompt": "kelp forest news", "country": "GB"}
GUARDIAN = "https://www.theguardian.com/environment/2026/jan/14/kelp-forest-recovery?utm_source=openai"
AP = "https://apnews.com/article/kelp-study-2026"


def test_request_targets_responses_with_web_search_located_in_the_country(call, upstream, recorded) -> None:
    up = upstream(httpx.Response(200, json=recorded("openai_web_search.json")))
    call("CHATGPT", {**PAYLOAD, "country": "US", "state": "CA"}, up, model="gpt-5-mini")
    request = up.requests[0]
    assert (request.method, str(request.url)) == ("POST", "https://upstream.test/v1/responses")
    assert request.headers["authorization"] == "Bearer sk-test"
    body = up.last_json
    assert body["model"] == "gpt-5-mini"
    assert body["input"] == "kelp forest news"
    assert body["tools"] == [
        {"type": "web_search", "user_location": {"type": "approximate", "country": "US", "region": "CA"}}
    ]
    assert body["tool_choice"] == "required"


def test_disable_web_search_sends_no_tools(call, upstream, recorded) -> None:
    up = upstream(httpx.Response(200, json=recorded("openai_web_search.json")))
    call("CHATGPT", {**PAYLOAD, "disableWebSearch": True}, up)
    assert "tools" not in up.last_json


def test_answer_joins_messages_and_lists_cited_then_consulted_sources(call, upstream, recorded) -> None:
    result = call("CHATGPT", PAYLOAD, upstream(httpx.Response(200, json=recorded("openai_web_search.json"))))
    assert result["text"].startswith("Kelp forests off California")
    assert result["text"].endswith("A second study confirms the trend.")
    assert result["model"] == "gpt-5-mini-2025-08-07"
    assert [(s["position"], s["url"], s["footnote"]) for s in result["sources"]] == [
        (1, GUARDIAN, True),
        (2, AP, True),
        (3, "https://www.nature.com/articles/kelp-2026", False),
    ]
    assert result["sources"][0]["label"] == "Kelp forests bounce back | The Guardian"
    assert result["sources"][2]["label"] == "nature.com"
    assert {"markdown", "searchQueries", "rawResponse"}.isdisjoint(result)


def test_markdown_links_citations_the_text_does_not_already_link(call, upstream, recorded) -> None:
    body = recorded("openai_web_search.json")
    payload = {**PAYLOAD, "include": {"markdown": True}}
    markdown = call("CHATGPT", payload, upstream(httpx.Response(200, json=body)))["markdown"]
    # The Guardian span is already a link; the AP one (second message, offsets relative to it) gets [2].
    assert markdown.count(GUARDIAN) == 2  # inline in the text and in the source list
    assert f"A second study confirms the trend.[2]({AP})" in markdown
    assert markdown.endswith("3. [nature.com](https://www.nature.com/articles/kelp-2026)")


def test_search_queries_and_raw_response_only_when_included(call, upstream, recorded) -> None:
    body = recorded("openai_web_search.json")
    payload = {**PAYLOAD, "include": {"searchQueries": True, "rawResponse": True}}
    result = call("CHATGPT", payload, upstream(httpx.Response(200, json=body)))
    assert result["searchQueries"] == ["kelp forest recovery 2026"]
    assert result["rawResponse"] == [body]


def test_empty_output_text_is_an_invalid_response(fails, upstream, recorded) -> None:
    body = recorded("openai_web_search.json")
    body["output"] = [item for item in body["output"] if item["type"] != "message"]
    error = fails("CHATGPT", PAYLOAD, upstream(httpx.Response(200, json=body)))
    assert (error.code, error.retryable) == (Code.PROVIDER_INVALID_RESPONSE, False)


def test_refusal_is_rejected(fails, upstream) -> None:
    body = {
        "status": "completed",
        "output": [
            {"type": "message", "content": [{"type": "refusal", "refusal": "I can't help with that."}]}
        ],
    }
    error = fails("CHATGPT", PAYLOAD, upstream(httpx.Response(200, json=body)))
    assert error.code == Code.PROVIDER_REJECTED
    assert "I can't help with that." in error.message


def test_failed_response_with_server_error_is_retryable(fails, upstream) -> None:
    body = {"status": "failed", "error": {"code": "server_error", "message": "oops"}, "output": []}
    error = fails("CHATGPT", PAYLOAD, upstream(httpx.Response(200, json=body)))
    assert (error.code, error.retryable) == (Code.PROVIDER_UNAVAILABLE, True)


def test_rate_limit_429_is_retryable_with_retry_after(fails, upstream) -> None:
    body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    headers = {"retry-after-ms": "250", "x-ratelimit-remaining-requests": "0"}
    error = fails("CHATGPT", PAYLOAD, upstream(httpx.Response(429, json=body, headers=headers)))
    assert (error.code, error.retryable, error.retry_after, error.status) == (
        Code.PROVIDER_RATE_LIMITED,
        True,
        0.25,
        429,
    )
    assert error.message == "OpenAI returned 429 rate_limit_exceeded: Rate limit reached"


def test_insufficient_quota_429_fails_fast(fails, upstream) -> None:
    body = {
        "error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": None}
    }
    error = fails("CHATGPT", PAYLOAD, upstream(httpx.Response(429, json=body, headers={"retry-after": "1"})))
    assert (error.code, error.retryable, error.retry_after) == (Code.PROVIDER_QUOTA_EXHAUSTED, False, None)


def test_malformed_json_is_an_invalid_response(fails, upstream) -> None:
    error = fails("CHATGPT", PAYLOAD, upstream(httpx.Response(200, content=b'{"id": "resp_1", "outp')))
    assert (error.code, error.retryable) == (Code.PROVIDER_INVALID_RESPONSE, False)
    assert error.message.startswith("OpenAI returned an unusable body: not JSON")


def test_missing_output_array_is_an_invalid_response(fails, upstream) -> None:
    error = fails("CHATGPT", PAYLOAD, upstream(httpx.Response(200, json={"status": "completed"})))
    assert error.code == Code.PROVIDER_INVALID_RESPONSE
