"""Error classification shared by every adapter: status → code, retryability, retry-after sources."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from taskq.errors import Code
from taskq.providers import ADAPTERS, ProviderConfig, ProviderError
from taskq.providers.base import error_from_response, retry_after
from taskq.schemas.payloads import GeminiPayload

CHAT = {"prompt": "hello", "country": "US"}


def _error(
    status: int, body: object = None, headers: dict[str, str] | None = None, text: str = ""
) -> ProviderError:
    response = (
        httpx.Response(status, json=body, headers=headers)
        if body is not None
        else httpx.Response(status, text=text, headers=headers)
    )
    return error_from_response("Upstream", response)


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, Code.PROVIDER_REJECTED, False),
        (401, Code.PROVIDER_AUTH_FAILED, False),
        (403, Code.PROVIDER_AUTH_FAILED, False),
        (404, Code.PROVIDER_REJECTED, False),
        (408, Code.PROVIDER_TIMEOUT, True),
        (409, Code.PROVIDER_UNAVAILABLE, True),
        (410, Code.PROVIDER_REJECTED, False),
        (422, Code.PROVIDER_REJECTED, False),
        (429, Code.PROVIDER_RATE_LIMITED, True),
        (500, Code.PROVIDER_UNAVAILABLE, True),
        (502, Code.PROVIDER_UNAVAILABLE, True),
        (503, Code.PROVIDER_UNAVAILABLE, True),
        (504, Code.PROVIDER_UNAVAILABLE, True),
    ],
)
def test_status_codes_map_to_a_code_and_retryability(status: int, code: Code, retryable: bool) -> None:
    error = _error(status, {"error": {"message": "boom", "type": "some_type"}})
    assert (error.code, error.retryable, error.status) == (code, retryable, status)
    assert error.message == f"Upstream returned {status} some_type: boom"


def test_retry_after_ms_wins_over_retry_after_seconds() -> None:
    error = _error(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "1500", "retry-after": "20"})
    assert error.retry_after == 1.5


def test_retry_after_seconds_header_is_read() -> None:
    assert _error(503, {"error": "busy"}, {"Retry-After": "7"}).retry_after == 7.0


def test_retry_after_http_date_becomes_seconds_from_now() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    wait = _error(429, {"error": "later"}, {"Retry-After": when}).retry_after
    assert wait is not None and 25 <= wait <= 31


def test_unparseable_retry_after_is_ignored() -> None:
    assert retry_after(httpx.Headers({"retry-after": "soon"})) is None


def test_permanent_errors_carry_no_retry_after() -> None:
    assert _error(400, {"error": "bad"}, {"Retry-After": "5"}).retry_after is None


def test_x_should_retry_false_overrides_a_retryable_status() -> None:
    error = _error(500, {"error": {"message": "no"}}, {"x-should-retry": "false"})
    assert not error.retryable


def test_x_should_retry_true_makes_a_4xx_retryable() -> None:
    assert _error(400, {"error": {"message": "try"}}, {"x-should-retry": "true"}).retryable


def test_html_error_body_is_summarized_by_its_title() -> None:
    html = "<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>"
    error = _error(502, text=html)
    assert error.message == "Upstream returned 502: 502 Bad Gateway"
    assert error.retryable


def test_empty_error_body_still_names_the_status() -> None:
    error = _error(500, text="")
    assert error.message.startswith("Upstream returned 500")


def _run_gemini(handler: httpx.MockTransport) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(transport=handler) as client:
            config = ProviderConfig("https://upstream.test", "key", "gemini-test", 5.0)
            await ADAPTERS["GEMINI"](GeminiPayload.model_validate(CHAT), client, config)

    asyncio.run(go())


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (httpx.ReadTimeout("read timed out"), Code.PROVIDER_TIMEOUT),
        (httpx.ConnectTimeout("connect timed out"), Code.PROVIDER_TIMEOUT),
        (httpx.ConnectError("connection refused"), Code.PROVIDER_UNAVAILABLE),
        (httpx.RemoteProtocolError("server hung up"), Code.PROVIDER_UNAVAILABLE),
        (httpx.ReadError("reset by peer"), Code.PROVIDER_UNAVAILABLE),
    ],
)
def test_transport_errors_become_retryable_provider_errors(raised: Exception, code: Code) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    with pytest.raises(ProviderError) as info:
        _run_gemini(httpx.MockTransport(handler))
    assert info.value.code == code
    assert info.value.retryable
    assert info.value.__cause__ is raised
    assert "Gemini" in info.value.message


def test_foreign_exception_inside_an_adapter_is_translated_at_the_boundary() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in a transport")

    with pytest.raises(ProviderError) as info:
        _run_gemini(httpx.MockTransport(handler))
    assert info.value.code == Code.PROVIDER_INVALID_RESPONSE
    assert isinstance(info.value.__cause__, RuntimeError)


def test_oserror_from_a_transport_is_retryable_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise ConnectionResetError("reset")

    with pytest.raises(ProviderError) as info:
        _run_gemini(httpx.MockTransport(handler))
    assert (info.value.code, info.value.retryable) == (Code.PROVIDER_UNAVAILABLE, True)


def test_body_of_the_wrong_shape_is_an_invalid_response_not_a_crash() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, json={"candidates": [{"content": 7}]})
    )
    with pytest.raises(ProviderError) as info:
        _run_gemini(transport)
    assert (info.value.code, info.value.retryable) == (Code.PROVIDER_INVALID_RESPONSE, False)
    assert info.value.__cause__ is not None


def test_adapter_given_another_task_types_payload_fails_without_calling_upstream() -> None:
    seen: list[httpx.Request] = []

    async def go() -> None:
        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(500)

        transport = httpx.MockTransport(answer)
        async with httpx.AsyncClient(transport=transport) as client:
            config = ProviderConfig("https://upstream.test", "key", "m", 5.0)
            await ADAPTERS["CHATGPT"](GeminiPayload.model_validate(CHAT), client, config)

    with pytest.raises(ProviderError) as info:
        asyncio.run(go())
    assert info.value.code == Code.VALIDATION_ERROR
    assert not seen


def test_every_task_type_has_an_adapter() -> None:
    assert set(ADAPTERS) == {
        "CHATGPT",
        "GEMINI",
        "PERPLEXITY",
        "GROK",
        "GOOGLE",
        "GOOGLE_NEWS",
        "AIMODE",
        "COPILOT",
    }
