"""GOOGLE_NEWS adapter against a recorded Google News RSS feed."""

from __future__ import annotations

import httpx

from taskq.errors import Code

PAYLOAD = {"query": '"electric buses" when:7d', "country": "GB", "hl": "en-GB"}
EMPTY_FEED = (
    b'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>x - Google News</title>'
    b"<link>https://news.google.com</link><description>Google News</description></channel></rss>"
)


def _rss(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "application/xml; charset=utf-8"})


def test_request_keeps_hl_gl_and_ceid_consistent_and_sends_no_key(call, upstream, recorded) -> None:
    up = upstream(_rss(recorded("google_news.rss")))
    call("GOOGLE_NEWS", PAYLOAD, up)
    request = up.requests[0]
    assert request.url.path == "/rss/search"
    assert dict(request.url.params) == {
        "q": '"electric buses" when:7d',
        "hl": "en-GB",
        "gl": "GB",
        "ceid": "GB:en",
    }
    assert "authorization" not in request.headers


def test_ceid_keeps_language_variants_google_treats_as_languages(call, upstream) -> None:
    up = upstream(_rss(EMPTY_FEED))
    call("GOOGLE_NEWS", {"query": "futebol", "gl": "br", "hl": "pt-419"}, up)
    assert dict(up.requests[0].url.params)["ceid"] == "BR:pt-419"


def test_items_become_news_results_with_publisher_suffix_stripped(call, upstream, recorded) -> None:
    result = call("GOOGLE_NEWS", PAYLOAD, upstream(_rss(recorded("google_news.rss"))))
    news = result["newsResults"]
    assert news[0] == {
        "position": 1,
        "title": "London adds 200 electric buses to its fleet",
        "link": "https://news.google.com/rss/articles/CBMiakFVX3lxTE1fcmVjb3JkZWQx?oc=5",
        "snippet": "London adds 200 electric buses to its fleet BBC",
        "source": "BBC",
        "date": "2026-01-14T09:15:00Z",
        "page": 1,
    }
    # A title with its own dash keeps it; only the " - Publisher" suffix goes.
    assert news[1]["title"] == "Café owners welcome quieter streets \u2013 a year of e-buses"
    assert news[1]["source"] == "The Guardian"
    assert [n["position"] for n in news] == [1, 2, 3]
    assert (
        result["text"].splitlines()[0]
        == "1. London adds 200 electric buses to its fleet (BBC, 2026-01-14T09:15:00Z)"
    )


def test_pages_bound_the_number_of_items(call, upstream) -> None:
    items = "".join(
        f"<item><title>Story {i} - Pub</title><link>https://news.google.com/rss/articles/{i}</link>"
        f"<pubDate>Wed, 14 Jan 2026 09:15:00 GMT</pubDate><source url='https://pub.example'>Pub</source></item>"
        for i in range(35)
    )
    feed = (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{items}</channel></rss>'.encode()
    )
    news = call("GOOGLE_NEWS", {**PAYLOAD, "pages": 2}, upstream(_rss(feed)))["newsResults"]
    assert len(news) == 20
    assert (news[9]["page"], news[10]["page"], news[19]["position"]) == (1, 2, 20)


def test_feed_with_no_items_is_an_empty_success(call, upstream) -> None:
    assert call("GOOGLE_NEWS", PAYLOAD, upstream(_rss(EMPTY_FEED))) == {"text": "", "newsResults": []}


def test_html_page_instead_of_a_feed_is_an_invalid_response(fails, upstream) -> None:
    page = b"<html><body>Our systems have detected unusual traffic from your computer network.</body></html>"
    error = fails("GOOGLE_NEWS", PAYLOAD, upstream(httpx.Response(200, content=page)))
    assert (error.code, error.retryable) == (Code.PROVIDER_INVALID_RESPONSE, False)


def test_throttling_503_is_retryable(fails, upstream) -> None:
    error = fails(
        "GOOGLE_NEWS", PAYLOAD, upstream(httpx.Response(503, text="<html><title>Sorry</title></html>"))
    )
    assert (error.code, error.retryable) == (Code.PROVIDER_UNAVAILABLE, True)
    assert error.message == "Google News returned 503: Sorry"
