"""POST /v1/monitor/google/goto: Google redirect links resolved through the simulator (and recorded
answers through httpx.MockTransport); free, no concurrency slot; 502 when Google will not say."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from taskq.errors import Code
from taskq.providers import goto
from taskq.providers.base import ProviderError
from tests.support.orgs import auth
from tests.support.settings import make_settings
from tests.support.upstream import Upstream

LINK = "https://www.google.com/goto?url=CAESaAHrOzAVev0pi_wnTxm1qpiZTmMy"


@pytest.fixture
def sim() -> Iterator[Upstream]:
    with Upstream(simulator=True) as server:
        yield server


def test_a_redirect_link_resolves_for_free_without_a_concurrency_slot(
    sim: Upstream, rclient: Any, make_org: Any, store: Any
) -> None:
    from taskq.api import create_app

    app = create_app(make_settings(upstream_base_url=sim.url), client=rclient)
    org, key = make_org(credits=0, concurrency=1)
    http: Any = app.test_client()
    got = http.post("/v1/monitor/google/goto", json={"url": LINK}, headers=auth(key))
    assert got.status_code == 200, got.json
    assert got.json == {"success": True, "result": {"url": "https://example.com/simulated/CAESaAHrOzAVev0pi_wnTxm1qpiZTmMy",
                                                    "redirectLink": LINK}}  # fmt: skip
    assert "X-Concurrency-Limit" not in got.headers and "X-Credits-Charged" not in got.headers
    direct = http.post("/v1/monitor/google/goto", json={"url": "https://www.google.com/url?q=https://a.example/x"},
                       headers=auth(key))  # fmt: skip
    assert direct.json["result"]["url"] == "https://a.example/x"
    fields = store.org_fields(org)
    assert (int(fields["credits"]), int(fields.get("inflight", 0)), int(fields.get("reserved", 0))) == (
        0,
        0,
        0,
    )


def test_a_link_google_does_not_redirect_is_502_and_a_foreign_link_is_400(
    sim: Upstream, rclient: Any, make_org: Any
) -> None:
    from taskq.api import create_app

    app = create_app(make_settings(upstream_base_url=sim.url), client=rclient)
    _, key = make_org()
    http: Any = app.test_client()
    failed = http.post("/v1/monitor/google/goto", json={"url": LINK + "[sim:404]"}, headers=auth(key))
    assert failed.status_code == 502
    assert failed.json["error"]["code"] == "EXTERNAL_SERVICE_ERROR"
    assert failed.json["error"]["details"]["service"] == "google"
    for body, field in [
        ({"url": "https://evil.example/goto?url=x"}, "url"),
        ({"url": "https://www.google.com/search?q=x"}, "url"),
        ({"url": LINK, "follow": True}, "follow"),
        ({}, "url"),
        ([LINK], "body"),
    ]:
        got = http.post("/v1/monitor/google/goto", json=body, headers=auth(key))
        assert got.status_code == 400 and got.json["error"]["code"] == "VALIDATION_ERROR", body
        assert field in [d["field"] for d in got.json["error"]["details"]], (body, got.json)


def mock(handler: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_resolve_reads_the_redirect_and_sends_only_path_and_query_to_the_configured_host() -> None:
    seen: list[httpx.Request] = []

    def google(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "https://dest.example/page"})

    assert goto.resolve(LINK, mock(google), "https://google.internal", 10) == "https://dest.example/page"
    assert str(seen[0].url) == "https://google.internal/goto?url=CAESaAHrOzAVev0pi_wnTxm1qpiZTmMy"


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (httpx.Response(200, text="<html>no redirect</html>"), Code.PROVIDER_INVALID_RESPONSE),
        (httpx.Response(302, headers={"Location": "/relative"}), Code.PROVIDER_INVALID_RESPONSE),
        (httpx.ReadTimeout("slow"), Code.PROVIDER_TIMEOUT),
        (httpx.ConnectError("refused"), Code.PROVIDER_UNAVAILABLE),
    ],
)
def test_resolve_failures_are_provider_errors(answer: Any, code: Code) -> None:
    def google(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(ProviderError) as caught:
        goto.resolve(LINK, mock(google), "https://google.internal", 10)
    assert caught.value.code == code
