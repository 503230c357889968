"""PERPLEXITY adapter against recorded Sonar bodies, including the HTML 401 page."""

from __future__ import annotations

import httpx

from taskq.errors import Code

PAYLOAD = {"prompt": "How often does Old Faithful erupt?", "country": "US"}
NPS = "https://www.nps.gov/yell/learn/nature/geysers.htm"
WIKI = "https://en.wikipedia.org/wiki/Old_Faithful"
HTML_401 = (
    "<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n"
    "<center><h1>401 Authorization Required</h1></center>\r\n<hr><center>openresty/1.27.1.1</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def test_request_is_a_chat_completion_with_user_location(call, upstream, recorded) -> None:
    up = upstream(httpx.Response(200, json=recorded("perplexity_sonar.json")))
    call("PERPLEXITY", {**PAYLOAD, "state": "WY"}, up, model="sonar")
    request = up.requests[0]
    assert (request.method, str(request.url)) == ("POST", "https://upstream.test/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert up.last_json == {
        "model": "sonar",
        "messages": [{"role": "user", "content": "How often does Old Faithful erupt?"}],
        "web_search_options": {
            "search_context_size": "medium",
            "user_location": {"country": "US", "region": "WY"},
        },
    }


def test_think_block_is_stripped_and_search_results_become_sources(call, upstream, recorded) -> None:
    result = call(
        "PERPLEXITY", PAYLOAD, upstream(httpx.Response(200, json=recorded("perplexity_sonar.json")))
    )
    assert result["text"] == "Old Faithful erupts about every 90 minutes [1][2]. It is a cone geyser [2]."
    assert result["sources"] == [
        {
            "position": 1,
            "url": NPS,
            "label": "Geysers - Yellowstone National Park",
            "description": "Yellowstone has more geysers than anywhere.",
            "date": "2025-11-02",
        },
        {
            "position": 2,
            "url": WIKI,
            "label": "Old Faithful - Wikipedia",
            "description": "Old Faithful is a cone geyser.",
        },
    ]
    assert result["model"] == "sonar-reasoning"


def test_citations_are_the_fallback_when_search_results_are_absent(call, upstream, recorded) -> None:
    body = recorded("perplexity_sonar.json")
    del body["search_results"]
    result = call("PERPLEXITY", PAYLOAD, upstream(httpx.Response(200, json=body)))
    assert [(s["url"], s["label"]) for s in result["sources"]] == [
        (NPS, "nps.gov"),
        (WIKI, "en.wikipedia.org"),
    ]


def test_markdown_turns_numeric_markers_into_links(call, upstream, recorded) -> None:
    body = recorded("perplexity_sonar.json")
    markdown = call(
        "PERPLEXITY", {**PAYLOAD, "include": {"markdown": True}}, upstream(httpx.Response(200, json=body))
    )["markdown"]
    assert markdown.startswith(f"Old Faithful erupts about every 90 minutes [1]({NPS})[2]({WIKI}).")
    assert "<think>" not in markdown


def test_marker_beyond_the_source_list_is_left_as_text(call, upstream, recorded) -> None:
    body = recorded("perplexity_sonar.json")
    body["choices"][0]["message"]["content"] = "Claim [7]."
    markdown = call(
        "PERPLEXITY", {**PAYLOAD, "include": {"markdown": True}}, upstream(httpx.Response(200, json=body))
    )["markdown"]
    assert markdown.startswith("Claim [7].")


def test_html_401_page_is_an_auth_failure_named_by_its_title(fails, upstream) -> None:
    error = fails(
        "PERPLEXITY",
        PAYLOAD,
        upstream(httpx.Response(401, text=HTML_401, headers={"content-type": "text/html"})),
    )
    assert (error.code, error.retryable, error.status) == (Code.PROVIDER_AUTH_FAILED, False, 401)
    assert error.message == "Perplexity returned 401: 401 Authorization Required"


def test_invalid_model_400_is_rejected(fails, upstream) -> None:
    body = {"error": {"message": "Invalid model 'sonar-x'", "type": "invalid_model", "code": 400}}
    error = fails("PERPLEXITY", PAYLOAD, upstream(httpx.Response(400, json=body)))
    assert (error.code, error.retryable) == (Code.PROVIDER_REJECTED, False)
    assert error.message == "Perplexity returned 400 invalid_model: Invalid model 'sonar-x'"


def test_answer_that_is_only_a_think_block_is_an_invalid_response(fails, upstream, recorded) -> None:
    body = recorded("perplexity_sonar.json")
    body["choices"][0]["message"]["content"] = "<think>pondering</think>\n"
    assert (
        fails("PERPLEXITY", PAYLOAD, upstream(httpx.Response(200, json=body))).code
        == Code.PROVIDER_INVALID_RESPONSE
    )


def test_missing_choices_is_an_invalid_response(fails, upstream) -> None:
    error = fails("PERPLEXITY", PAYLOAD, upstream(httpx.Response(200, json={"id": "x", "choices": []})))
    assert error.code == Code.PROVIDER_INVALID_RESPONSE
