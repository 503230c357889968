"""GOOGLE adapter against recorded SerpApi engine=google bodies: params, pages, url mode, SerpApi errors."""

from __future__ import annotations

import httpx

from taskq.errors import Code

PAYLOAD = {"query": "coffee", "country": "GB"}
ARROW = "\u203a"  # the angle quote Google puts in displayed links


def _params(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


def test_query_maps_country_to_lowercase_gl_with_the_uk_override(call, upstream, recorded) -> None:
    up = upstream(httpx.Response(200, json=recorded("serpapi_google.json")))
    call("GOOGLE", {**PAYLOAD, "hl": "en", "location": "London,England,United Kingdom", "device": "ios"}, up)
    request = up.requests[0]
    assert request.url.path == "/search.json"
    assert _params(request) == {
        "engine": "google",
        "q": "coffee",
        "gl": "uk",
        "hl": "en",
        "location": "London,England,United Kingdom",
        "device": "mobile",
        "api_key": "sk-test",
    }


def test_gl_is_lowercased_and_uule_passed(call, upstream, recorded) -> None:
    up = upstream(httpx.Response(200, json=recorded("serpapi_google.json")))
    call("GOOGLE", {"query": "coffee", "gl": "DE", "uule": "w+CAIQICI"}, up)
    params = _params(up.requests[0])
    assert (params["gl"], params["uule"], params["device"]) == ("de", "w+CAIQICI", "desktop")


def test_organic_results_are_normalized_and_summarized(call, upstream, recorded) -> None:
    result = call("GOOGLE", PAYLOAD, upstream(httpx.Response(200, json=recorded("serpapi_google.json"))))
    assert result["organicResults"][0] == {
        "position": 1,
        "title": "Coffee - Wikipedia",
        "link": "https://en.wikipedia.org/wiki/Coffee",
        "displayedLink": f"https://en.wikipedia.org {ARROW} wiki {ARROW} Coffee",
        "snippet": "Coffee is a beverage brewed from roasted coffee beans.",
        "page": 1,
    }
    assert result["organicResults"][2]["snippet"] == ""
    assert (
        result["text"].splitlines()[0]
        == f"1. Coffee - Wikipedia (https://en.wikipedia.org {ARROW} wiki {ARROW} Coffee)"
    )
    assert "aioverview" not in result


def test_each_page_is_one_call_with_its_start_offset_and_positions_continue(call, upstream, recorded) -> None:
    up = upstream(httpx.Response(200, json=recorded("serpapi_google.json")))
    result = call("GOOGLE", {**PAYLOAD, "pages": 3}, up)
    assert sorted(_params(r).get("start", "0") for r in up.requests) == ["0", "10", "20"]
    assert [r["position"] for r in result["organicResults"]] == list(range(1, 10))
    assert [r["page"] for r in result["organicResults"]] == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_one_failed_page_fails_the_task(fails, upstream, recorded) -> None:
    ok = httpx.Response(200, json=recorded("serpapi_google.json"))
    busy = httpx.Response(
        503, json={"error": "We couldn't get valid results.", "search_metadata": {"status": "Error"}}
    )
    error = fails("GOOGLE", {**PAYLOAD, "pages": 2}, upstream(ok, busy))
    assert (error.code, error.retryable) == (Code.PROVIDER_UNAVAILABLE, True)


def test_url_mode_replays_the_search_url_parameters(call, upstream, recorded) -> None:
    up = upstream(httpx.Response(200, json=recorded("serpapi_google.json")))
    url = "https://www.google.co.uk/search?q=flat+white&hl=en-GB&gl=gb&start=10&oq=flat&sourceid=chrome"
    call("GOOGLE", {"url": url}, up)
    assert _params(up.requests[0]) == {
        "engine": "google",
        "q": "flat white",
        "hl": "en-GB",
        "gl": "uk",
        "start": "10",
        "google_domain": "google.co.uk",
        "device": "desktop",
        "api_key": "sk-test",
    }


def test_url_without_q_is_rejected_before_any_call(fails, upstream) -> None:
    up = upstream(httpx.Response(500))
    error = fails("GOOGLE", {"url": "https://www.google.com/search?tbm=nws"}, up)
    assert error.code == Code.PROVIDER_REJECTED
    assert not up.requests


def test_ai_overview_is_included_when_requested(call, upstream, recorded) -> None:
    payload = {**PAYLOAD, "include": {"aioverview": {"markdown": True}}}
    overview = call("GOOGLE", payload, upstream(httpx.Response(200, json=recorded("serpapi_google.json"))))[
        "aioverview"
    ]
    assert overview["text"] == "Coffee is a brewed drink."
    assert overview["sources"][0]["url"] == "https://en.wikipedia.org/wiki/Coffee"
    assert overview["markdown"] == "Coffee is a brewed drink. [1](https://en.wikipedia.org/wiki/Coffee)"


def test_no_results_is_an_empty_success(call, upstream) -> None:
    body = {
        "search_metadata": {"status": "Success"},
        "error": "Google hasn't returned any results for this query.",
    }
    result = call("GOOGLE", PAYLOAD, upstream(httpx.Response(200, json=body)))
    assert result == {"text": "", "organicResults": []}


def test_out_of_searches_429_fails_fast(fails, upstream) -> None:
    body = {"error": "Your account has run out of searches."}
    error = fails("GOOGLE", PAYLOAD, upstream(httpx.Response(429, json=body)))
    assert (error.code, error.retryable) == (Code.PROVIDER_QUOTA_EXHAUSTED, False)
    assert error.message == "SerpApi returned 429: Your account has run out of searches."


def test_hourly_throughput_429_is_retryable(fails, upstream) -> None:
    body = {"error": "You have exceeded the hourly throughput limit."}
    error = fails("GOOGLE", PAYLOAD, upstream(httpx.Response(429, json=body, headers={"Retry-After": "3"})))
    assert (error.code, error.retryable, error.retry_after) == (Code.PROVIDER_RATE_LIMITED, True, 3.0)


def test_invalid_key_401_is_an_auth_failure_and_the_key_is_not_in_the_message(fails, upstream) -> None:
    error = fails("GOOGLE", PAYLOAD, upstream(httpx.Response(401, json={"error": "Invalid API key."})))
    assert error.code == Code.PROVIDER_AUTH_FAILED
    assert "sk-test" not in error.message


def test_search_error_inside_a_200_is_retryable(fails, upstream) -> None:
    body = {"search_metadata": {"status": "Error"}, "error": "We couldn't get valid results for this search."}
    error = fails("GOOGLE", PAYLOAD, upstream(httpx.Response(200, json=body)))
    assert (error.code, error.retryable) == (Code.PROVIDER_UNAVAILABLE, True)


def test_organic_result_without_link_is_an_invalid_response(fails, upstream, recorded) -> None:
    body = recorded("serpapi_google.json")
    del body["organic_results"][1]["link"]
    assert (
        fails("GOOGLE", PAYLOAD, upstream(httpx.Response(200, json=body))).code
        == Code.PROVIDER_INVALID_RESPONSE
    )
