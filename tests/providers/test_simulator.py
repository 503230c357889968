"""Every adapter against the real provider simulator over loopback HTTP: formats, auth, injected faults."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from typing import Any

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from taskq.errors import Code
from taskq.providers import ADAPTERS, PAYLOAD_MODELS, ProviderConfig, ProviderError
from taskq.simulator.app import parse_latency

MODELS = {"CHATGPT": "gpt-5-mini", "GEMINI": "gemini-2.5-flash", "PERPLEXITY": "sonar", "GROK": "grok-4-fast"}
PAYLOADS: dict[str, dict[str, Any]] = {
    "CHATGPT": {"prompt": "best bakeries {m}", "country": "GB", "include": {"markdown": True}},
    "GEMINI": {"prompt": "café history {m}", "country": "FR", "include": {"markdown": True}},
    "PERPLEXITY": {"prompt": "geysers {m}", "country": "US", "include": {"markdown": True}},
    "GROK": {"prompt": "mars rovers {m}", "country": "DE", "include": {"markdown": True}},
    "GOOGLE": {"query": "coffee {m}", "country": "GB", "pages": 2},
    "GOOGLE_NEWS": {"query": "buses {m}", "country": "GB"},
    "AIMODE": {"prompt": "heat pumps {m}", "country": "US", "include": {"markdown": True}},
    "COPILOT": {"prompt": "asyncio {m}", "country": "US", "include": {"markdown": True}},
}
KEYED = [t for t in PAYLOADS if t != "GOOGLE_NEWS"]


def _payload(task_type: str, marker: str = "") -> dict[str, Any]:
    payload = dict(PAYLOADS[task_type])
    field = "prompt" if "prompt" in payload else "query"
    payload[field] = payload[field].format(m=marker).strip()
    return payload


async def _call(
    url: str, task_type: str, payload: dict[str, Any], client: httpx.AsyncClient, key: str, timeout: float
) -> dict[str, Any]:
    config = ProviderConfig(url, key, MODELS.get(task_type, ""), timeout)
    return await ADAPTERS[task_type](PAYLOAD_MODELS[task_type].model_validate(payload), client, config)


def live(
    sim: Any, task_type: str, marker: str = "", *, key: str = "sk-sim", timeout: float = 5.0
) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return await _call(sim.url, task_type, _payload(task_type, marker), client, key, timeout)

    return asyncio.run(go())


def live_error(sim: Any, task_type: str, marker: str = "", **options: Any) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        live(sim, task_type, marker, **options)
    return info.value


@pytest.mark.parametrize("task_type", list(PAYLOADS))
def test_every_adapter_reads_the_simulated_upstream(simulator, task_type: str) -> None:
    result = live(simulator, task_type)
    assert "[simulated]" in result["text"]
    if task_type == "GOOGLE":
        assert [r["position"] for r in result["organicResults"]] == list(range(1, 21))
    elif task_type == "GOOGLE_NEWS":
        assert len(result["newsResults"]) == 10
        assert not result["newsResults"][0]["title"].endswith("Publisher 1")
    else:
        assert result["sources"] and all(s["url"].startswith("https://") for s in result["sources"])
        assert "](https://" in result["markdown"]


def test_simulator_answers_mention_the_requested_country(simulator) -> None:
    assert "GB" in live(simulator, "CHATGPT")["text"]
    assert "DE" in live(simulator, "GROK")["text"]


def test_gemini_multibyte_answer_gets_citations_at_sentence_ends(simulator) -> None:
    markdown = live(simulator, "GEMINI")["markdown"]
    assert "documented 🙂.[1](https://vertexaisearch" in markdown


def test_adapters_work_over_the_httpx_aiohttp_transport(simulator) -> None:
    async def go() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            calls = [_call(simulator.url, t, _payload(t), client, "sk-sim", 5.0) for t in PAYLOADS]
            return await asyncio.gather(*calls)

    assert all("[simulated]" in result["text"] for result in asyncio.run(go()))


def test_refused_connection_over_aiohttp_is_unavailable_not_a_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]

    async def go() -> None:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            await _call(f"http://127.0.0.1:{closed_port}", "GROK", _payload("GROK"), client, "k", 2.0)

    with pytest.raises(ProviderError) as info:
        asyncio.run(go())
    assert (info.value.code, info.value.retryable) == (Code.PROVIDER_UNAVAILABLE, True)


def test_hung_upstream_over_aiohttp_is_a_timeout(simulator) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            await _call(simulator.url, "GEMINI", _payload("GEMINI", "[sim:timeout]"), client, "k", 0.3)

    with pytest.raises(ProviderError) as info:
        asyncio.run(go())
    assert (info.value.code, info.value.retryable) == (Code.PROVIDER_TIMEOUT, True)


def test_responses_are_labelled_as_simulated(simulator) -> None:
    response = httpx.get(f"{simulator.url}/healthz")
    assert response.headers["x-simulator"] == "taskq"
    unauthorized = httpx.post(f"{simulator.url}/v1/responses", json={"model": "gpt-5-mini", "input": "x"})
    assert (unauthorized.status_code, unauthorized.headers["x-simulator"]) == (401, "taskq")


@pytest.mark.parametrize("task_type", KEYED)
def test_missing_key_is_refused_with_401(simulator, task_type: str) -> None:
    error = live_error(simulator, task_type, key="")
    assert (error.code, error.status, error.retryable) == (Code.PROVIDER_AUTH_FAILED, 401, False)


@pytest.mark.parametrize(
    ("task_type", "marker", "code", "retry_after"),
    [
        ("CHATGPT", "[sim:429]", Code.PROVIDER_RATE_LIMITED, 1.0),
        ("GEMINI", "[sim:429]", Code.PROVIDER_RATE_LIMITED, 1.5),
        ("AIMODE", "[sim:429]", Code.PROVIDER_RATE_LIMITED, 1.0),
        ("GOOGLE_NEWS", "[sim:429]", Code.PROVIDER_RATE_LIMITED, 1.0),
        ("PERPLEXITY", "[sim:500]", Code.PROVIDER_UNAVAILABLE, None),
        ("GOOGLE", "[sim:503]", Code.PROVIDER_UNAVAILABLE, None),
    ],
)
def test_retryable_faults_are_injected_by_marker(simulator, task_type, marker, code, retry_after) -> None:
    error = live_error(simulator, task_type, marker)
    assert (error.code, error.retryable, error.retry_after) == (code, True, retry_after)
    assert "[simulated]" in error.message or task_type == "GOOGLE_NEWS"


@pytest.mark.parametrize(
    ("task_type", "marker", "code"),
    [
        ("CHATGPT", "[sim:quota]", Code.PROVIDER_QUOTA_EXHAUSTED),
        ("GEMINI", "[sim:quota]", Code.PROVIDER_QUOTA_EXHAUSTED),
        ("COPILOT", "[sim:quota]", Code.PROVIDER_QUOTA_EXHAUSTED),
        ("GEMINI", "[sim:400]", Code.PROVIDER_AUTH_FAILED),
        ("CHATGPT", "[sim:400]", Code.PROVIDER_REJECTED),
        ("GROK", "[sim:410]", Code.PROVIDER_REJECTED),
        ("PERPLEXITY", "[sim:401]", Code.PROVIDER_AUTH_FAILED),
    ],
)
def test_permanent_faults_are_injected_by_marker(simulator, task_type, marker, code) -> None:
    error = live_error(simulator, task_type, marker)
    assert (error.code, error.retryable) == (code, False)


@pytest.mark.parametrize("task_type", list(PAYLOADS))
def test_malformed_body_is_an_invalid_response(simulator, task_type: str) -> None:
    assert live_error(simulator, task_type, "[sim:malformed]").code == Code.PROVIDER_INVALID_RESPONSE


def test_hung_upstream_is_a_retryable_timeout(simulator) -> None:
    started = time.monotonic()
    error = live_error(simulator, "PERPLEXITY", "[sim:timeout]", timeout=0.3)
    assert (error.code, error.retryable) == (Code.PROVIDER_TIMEOUT, True)
    assert time.monotonic() - started < 3


def test_fail_once_marker_fails_the_first_attempt_only(simulator) -> None:
    marker = f"[sim:429-once:{random.random()}]"
    assert live_error(simulator, "GROK", marker).code == Code.PROVIDER_RATE_LIMITED
    assert "[simulated]" in live(simulator, "GROK", marker)["text"]


def test_empty_marker_gives_each_format_its_empty_answer(simulator) -> None:
    assert live_error(simulator, "CHATGPT", "[sim:empty]").code == Code.PROVIDER_INVALID_RESPONSE
    assert live(simulator, "GEMINI", "[sim:empty]")["sources"] == []
    assert live(simulator, "GOOGLE", "[sim:empty]")["organicResults"] == []
    assert live(simulator, "GOOGLE_NEWS", "[sim:empty]")["newsResults"] == []


def test_error_rate_one_fails_every_request(make_simulator) -> None:
    with make_simulator(error_rate=1.0, seed=7) as sim:
        for _ in range(10):
            error = live_error(sim, "PERPLEXITY", timeout=0.3)
            assert error.code in {
                Code.PROVIDER_RATE_LIMITED,
                Code.PROVIDER_UNAVAILABLE,
                Code.PROVIDER_TIMEOUT,
                Code.PROVIDER_INVALID_RESPONSE,
            }


def test_latency_is_applied_and_concurrent_requests_overlap(make_simulator) -> None:
    async def burst(url: str) -> float:
        started = time.monotonic()
        # httpx's default pool spends seconds on 200 concurrent requests; aiohttp's is the one we ship.
        async with httpx.AsyncClient(
            transport=AiohttpTransport(limits=httpx.Limits(max_connections=200))
        ) as client:
            calls = [_call(url, "GOOGLE_NEWS", _payload("GOOGLE_NEWS"), client, "", 5.0) for _ in range(100)]
            await asyncio.gather(*calls)
        return time.monotonic() - started

    with make_simulator(latency=0.4) as sim:
        elapsed = asyncio.run(burst(sim.url))
    # One after another they would take 40 s; a loaded machine still overlaps them far more than 4x.
    assert 0.4 <= elapsed < 100 * 0.4 / 4


def test_latency_specs_parse_to_samplers() -> None:
    rng = random.Random(3)
    assert parse_latency(1.5)(rng) == 1.5
    assert parse_latency("0.25")(rng) == 0.25
    assert all(0.5 <= parse_latency("uniform:0.5,2")(rng) <= 2 for _ in range(100))
    assert all(parse_latency("exp:1.0")(rng) >= 0 for _ in range(100))
    for bad in ("fast", "uniform:1", "exp:0", "exp:x"):
        with pytest.raises(ValueError, match="latency must be"):
            parse_latency(bad)


@pytest.mark.parametrize("task_type", KEYED)
def test_above_its_rate_limit_each_flavor_answers_its_own_429_which_adapters_read_as_a_rate_limit(
    make_simulator: Any, task_type: str
) -> None:
    with make_simulator(rate_limit=0.05) as sim:  # one call in the bucket, the next one in 20 s
        if task_type != "GOOGLE":  # GOOGLE's second page is its second call
            live(sim, task_type)
        error = live_error(sim, task_type)
    assert error.code == Code.PROVIDER_RATE_LIMITED and error.status == 429 and error.retryable
    if task_type in ("CHATGPT", "GROK", "GEMINI"):  # retry-after-ms / RetryInfo: the real wait
        assert error.retry_after is not None and error.retry_after > 10
    if task_type in ("CHATGPT", "GROK"):  # x-ratelimit-limit-requests, per minute
        assert error.limit == pytest.approx(0.05)


@pytest.mark.parametrize("task_type", KEYED)
def test_after_its_quota_each_flavor_answers_its_own_quota_error_per_key(
    make_simulator: Any, task_type: str
) -> None:
    calls = 2 if task_type == "GOOGLE" else 1  # GOOGLE asks for two pages: two calls per task
    with make_simulator(quota=2 * calls) as sim:
        live(sim, task_type)
        live(sim, task_type)
        assert live_error(sim, task_type).code == Code.PROVIDER_QUOTA_EXHAUSTED
        assert live(sim, task_type, key="sk-other")  # another key, another account


@pytest.mark.parametrize("task_type", KEYED)
def test_a_revoked_key_gets_the_flavors_401(make_simulator: Any, task_type: str) -> None:
    with make_simulator(revoked=("sk-gone",)) as sim:
        assert live_error(sim, task_type, key="sk-gone").code == Code.PROVIDER_AUTH_FAILED
        assert live(sim, task_type)
