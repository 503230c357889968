"""GEMINI adapter against recorded generateContent bodies (byte-offset grounding, RPC error envelopes)."""

from __future__ import annotations

import httpx

from taskq.errors import Code

PAYLOAD = {"prompt": "Münchner Straßenbahn", "country": "DE"}
REDIRECT = "https://vertexaisearch.cloud.google.com/grounding-api-redirect/AUZIYQ"


def _rpc_error(code: int, status: str, message: str, details: list[dict[str, object]]) -> dict[str, object]:
    return {"error": {"code": code, "status": status, "message": message, "details": details}}


def _quota(quota_id: str, delay: str | None = "45.837906927s") -> dict[str, object]:
    details: list[dict[str, object]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {"quotaMetric": "generativelanguage.googleapis.com/requests", "quotaId": quota_id}
            ],
        }
    ]
    if delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    return _rpc_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", details)


def test_request_uses_model_path_api_key_header_and_google_search(call, upstream, recorded) -> None:
    up = upstream(httpx.Response(200, json=recorded("gemini_grounded.json")))
    call("GEMINI", PAYLOAD, up, model="gemini-2.5-flash")
    request = up.requests[0]
    assert str(request.url) == "https://upstream.test/v1beta/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == "sk-test"
    assert "authorization" not in request.headers
    body = up.last_json
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Münchner Straßenbahn"}]}]
    assert body["tools"] == [{"google_search": {}}]
    assert "DE" in body["systemInstruction"]["parts"][0]["text"]


def test_grounded_answer_has_chunk_sources_queries_and_model(call, upstream, recorded) -> None:
    result = call("GEMINI", PAYLOAD, upstream(httpx.Response(200, json=recorded("gemini_grounded.json"))))
    assert result["text"] == "Die Münchner Straßenbahn fährt seit 1876 🚋. Heute gibt es 13 Linien."
    assert result["sources"] == [
        {"position": 1, "url": REDIRECT + "Ek1", "label": "mvg.de", "description": ""},
        {"position": 2, "url": REDIRECT + "Fz2", "label": "wikipedia.org", "description": ""},
    ]
    assert result["searchQueries"] == ["Münchner Straßenbahn Geschichte", "Münchner Straßenbahn Linien"]
    assert result["model"] == "gemini-2.5-flash"
    assert "markdown" not in result


def test_markdown_places_citations_at_utf8_byte_offsets(call, upstream, recorded) -> None:
    payload = {**PAYLOAD, "include": {"markdown": True}}
    markdown = call("GEMINI", payload, upstream(httpx.Response(200, json=recorded("gemini_grounded.json"))))[
        "markdown"
    ]
    # Byte offsets treated as characters would land several characters late, inside the next sentence.
    first = f"fährt seit 1876 🚋.[1]({REDIRECT}Ek1)[2]({REDIRECT}Fz2) Heute"
    assert first in markdown
    assert f"13 Linien.[1]({REDIRECT}Ek1)\n\n1. [mvg.de]" in markdown


def test_thought_parts_are_skipped_and_part_index_addresses_the_answer_part(call, upstream) -> None:
    text = "Grüße aus Köln."
    body = {
        "candidates": [
            {
                "content": {"parts": [{"text": "Let me think…", "thought": True}, {"text": text}]},
                "groundingMetadata": {
                    "groundingChunks": [{"web": {"uri": "https://example.de/koeln", "title": "example.de"}}],
                    "groundingSupports": [
                        {
                            "segment": {"partIndex": 1, "endIndex": len("Grüße".encode())},
                            "groundingChunkIndices": [0],
                        }
                    ],
                },
            }
        ]
    }
    payload = {**PAYLOAD, "include": {"markdown": True}}
    result = call("GEMINI", payload, upstream(httpx.Response(200, json=body)))
    assert result["text"] == text
    assert result["markdown"].startswith("Grüße[1](https://example.de/koeln) aus Köln.")


def test_answer_without_grounding_metadata_is_valid_with_no_sources(call, upstream, recorded) -> None:
    body = recorded("gemini_grounded.json")
    del body["candidates"][0]["groundingMetadata"]
    result = call(
        "GEMINI", {**PAYLOAD, "include": {"markdown": True}}, upstream(httpx.Response(200, json=body))
    )
    assert result["sources"] == []
    assert result["markdown"] == result["text"]
    assert "searchQueries" not in result


def test_raw_response_is_the_body_in_a_list(call, upstream, recorded) -> None:
    body = recorded("gemini_grounded.json")
    result = call(
        "GEMINI", {**PAYLOAD, "include": {"rawResponse": True}}, upstream(httpx.Response(200, json=body))
    )
    assert result["rawResponse"] == [body]


def test_per_minute_quota_429_waits_for_retry_info_delay(fails, upstream) -> None:
    body = _quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
    error = fails("GEMINI", PAYLOAD, upstream(httpx.Response(429, json=body)))
    assert (error.code, error.retryable) == (Code.PROVIDER_RATE_LIMITED, True)
    assert error.retry_after == 45.837906927
    assert error.message.startswith("Gemini returned 429 RESOURCE_EXHAUSTED: You exceeded")


def test_per_day_quota_429_fails_fast(fails, upstream) -> None:
    body = _quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier")
    error = fails("GEMINI", PAYLOAD, upstream(httpx.Response(429, json=body)))
    assert (error.code, error.retryable, error.retry_after) == (Code.PROVIDER_QUOTA_EXHAUSTED, False, None)


def test_invalid_api_key_400_is_an_auth_failure(fails, upstream) -> None:
    details: list[dict[str, object]] = [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
    ]
    body = _rpc_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", details)
    error = fails("GEMINI", PAYLOAD, upstream(httpx.Response(400, json=body)))
    assert (error.code, error.retryable) == (Code.PROVIDER_AUTH_FAILED, False)


def test_overloaded_503_is_retryable(fails, upstream) -> None:
    body = _rpc_error(503, "UNAVAILABLE", "The model is overloaded.", [])
    error = fails("GEMINI", PAYLOAD, upstream(httpx.Response(503, json=body)))
    assert (error.code, error.retryable) == (Code.PROVIDER_UNAVAILABLE, True)


def test_blocked_prompt_is_rejected(fails, upstream) -> None:
    body = {"promptFeedback": {"blockReason": "SAFETY"}}
    error = fails("GEMINI", PAYLOAD, upstream(httpx.Response(200, json=body)))
    assert (error.code, error.retryable) == (Code.PROVIDER_REJECTED, False)


def test_safety_stop_without_text_is_rejected(fails, upstream) -> None:
    body = {"candidates": [{"content": {"parts": []}, "finishReason": "SAFETY"}]}
    assert fails("GEMINI", PAYLOAD, upstream(httpx.Response(200, json=body))).code == Code.PROVIDER_REJECTED


def test_candidate_without_text_is_an_invalid_response(fails, upstream) -> None:
    body = {"candidates": [{"content": {"parts": [{"text": ""}]}, "finishReason": "STOP"}]}
    error = fails("GEMINI", PAYLOAD, upstream(httpx.Response(200, json=body)))
    assert error.code == Code.PROVIDER_INVALID_RESPONSE


def test_html_body_with_200_is_an_invalid_response(fails, upstream) -> None:
    error = fails("GEMINI", PAYLOAD, upstream(httpx.Response(200, text="<html>proxy login</html>")))
    assert error.code == Code.PROVIDER_INVALID_RESPONSE
