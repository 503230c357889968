"""Google News editions: every task country and language is sent as one real edition (hl, gl, ceid)."""

from __future__ import annotations

import httpx
import pytest

from taskq.providers.news_editions import CEIDS, EDITIONS, edition, feed_params
from taskq.schemas.geo import COUNTRIES

EMPTY_FEED = (
    b'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>x - Google News</title>'
    b"<link>https://news.google.com</link><description>Google News</description></channel></rss>"
)


@pytest.mark.parametrize(
    ("country", "hl", "expected"),
    [
        ("BR", "pt-BR", {"hl": "pt-BR", "gl": "BR", "ceid": "BR:pt-419"}),
        ("BR", None, {"hl": "pt-BR", "gl": "BR", "ceid": "BR:pt-419"}),
        ("PT", "pt-PT", {"hl": "pt-PT", "gl": "PT", "ceid": "PT:pt-150"}),
        ("TW", None, {"hl": "zh-TW", "gl": "TW", "ceid": "TW:zh-Hant"}),
        ("HK", "zh-HK", {"hl": "zh-HK", "gl": "HK", "ceid": "HK:zh-Hant"}),
        ("CN", None, {"hl": "zh-CN", "gl": "CN", "ceid": "CN:zh-Hans"}),
        ("US", None, {"hl": "en-US", "gl": "US", "ceid": "US:en"}),
        ("US", "es-419", {"hl": "es-419", "gl": "US", "ceid": "US:es-419"}),
        ("GB", "en-GB", {"hl": "en-GB", "gl": "GB", "ceid": "GB:en"}),
        ("DE", None, {"hl": "de", "gl": "DE", "ceid": "DE:de"}),
        ("FR", "fr", {"hl": "fr", "gl": "FR", "ceid": "FR:fr"}),
        ("JP", None, {"hl": "ja", "gl": "JP", "ceid": "JP:ja"}),
        ("IN", None, {"hl": "en-IN", "gl": "IN", "ceid": "IN:en"}),
        ("IN", "hi", {"hl": "hi", "gl": "IN", "ceid": "IN:hi"}),
        ("MX", "es", {"hl": "es-419", "gl": "MX", "ceid": "MX:es-419"}),
        ("CA", "fr-CA", {"hl": "fr-CA", "gl": "CA", "ceid": "CA:fr"}),
        ("CH", None, {"hl": "de", "gl": "CH", "ceid": "CH:de"}),
    ],
)
def test_countries_with_editions_get_google_s_own_ceid(country: str, hl: str | None, expected: dict) -> None:
    assert feed_params(country, hl) == expected


def test_a_language_the_country_has_no_edition_in_gets_its_main_edition_in_its_language() -> None:
    # No DE:en edition: the German one, asked for in German, rather than a ceid Google does not serve.
    assert feed_params("DE", "en") == {"hl": "de", "gl": "DE", "ceid": "DE:de"}
    # Portuguese of Portugal is not sent to the Brazilian edition.
    assert feed_params("BR", "pt-PT") == {"hl": "pt-BR", "gl": "BR", "ceid": "BR:pt-419"}


@pytest.mark.parametrize(
    ("country", "hl", "ceid"),
    [
        ("FI", None, "US:en"),
        ("FI", "en-GB", "US:en"),
        ("AO", "pt-PT", "PT:pt-150"),
        ("AO", "pt", "BR:pt-419"),
        ("UY", "es", "ES:es"),
        ("UY", "es-419", "AR:es-419"),
        ("MO", "zh-TW", "TW:zh-Hant"),
        ("MO", "zh", "CN:zh-Hans"),
        ("LU", "fr", "FR:fr"),
    ],
)
def test_countries_without_an_edition_get_the_edition_of_their_language(
    country: str, hl: str | None, ceid: str
) -> None:
    assert country not in EDITIONS
    params = feed_params(country, hl)
    assert params["ceid"] == ceid
    assert params["gl"] == ceid.split(":")[0]


@pytest.mark.parametrize("hl", [None, "en", "en-US", "es", "pt-BR", "zh-TW", "ar", "fr", "xx-YY"])
def test_every_accepted_country_and_language_is_one_real_consistent_edition(hl: str | None) -> None:
    for country in sorted(COUNTRIES):
        params = feed_params(country, hl)
        assert params["ceid"] in CEIDS
        gl, language = params["ceid"].split(":")
        assert params["gl"] == gl
        if country in EDITIONS:
            assert gl == country
        chosen = edition(country, hl)
        assert params["hl"] in (hl, chosen.hl)
        assert params["hl"].split("-")[0].lower() == language.split("-")[0].lower()


def test_the_edition_table_has_each_ceid_once_and_a_main_edition_per_country() -> None:
    assert len(CEIDS) == len(set(CEIDS))
    assert all(eds for eds in EDITIONS.values())
    assert {e.ceid for eds in EDITIONS.values() for e in eds} == set(CEIDS)
    assert set(EDITIONS) <= COUNTRIES


def test_the_adapter_sends_the_brazilian_edition_for_brazilian_portuguese(call, upstream) -> None:
    up = upstream(httpx.Response(200, content=EMPTY_FEED, headers={"content-type": "application/xml"}))
    call("GOOGLE_NEWS", {"query": "futebol", "country": "BR", "hl": "pt-BR"}, up)
    assert dict(up.requests[0].url.params) == {"q": "futebol", "hl": "pt-BR", "gl": "BR", "ceid": "BR:pt-419"}
