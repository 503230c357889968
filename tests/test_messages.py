"""What a client reads when it gets something wrong: no library prefixes, and the fix in the message."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.orgs import auth


def test_a_validator_message_reads_without_pydantics_value_error_prefix(http: Any, make_org: Any) -> None:
    _, key = make_org()
    body = [
        {"taskType": "GEMINI", "payload": {"prompt": "hi", "country": "us"}},
        {"taskType": "GOOGLE", "payload": {"query": "q", "country": "US", "pages": 99}},
    ]
    results = http.post("/v1/async/task/batch", json=body, headers=auth(key)).json["results"]
    country, pages = (r["error"]["details"]["errors"][0] for r in results)
    assert country == {
        "field": "payload.country",
        "message": "must be an uppercase ISO 3166-1 alpha-2 country code, e.g. US",
    }
    assert (
        pages["field"] == "payload.pages" and pages["message"] == "Input should be less than or equal to 10"
    )
    one = http.post("/v1/async/task", json=body[0], headers=auth(key)).json
    assert "Value error" not in str(one) and "ISO 3166-1" in str(one)


@pytest.mark.parametrize("scheme", ["", "Token ", "bearer "])
def test_a_key_without_the_bearer_scheme_is_told_how_to_send_it(
    http: Any, make_org: Any, scheme: str
) -> None:
    _, key = make_org()
    r = http.get("/v1/credits", headers={"Authorization": scheme + key})
    assert r.status_code == 401 and r.json["error"]["code"] == "MISSING_API_KEY"
    assert "use `Authorization: Bearer <key>`" in r.json["error"]["message"]


def test_no_authorization_header_says_what_to_send(http: Any) -> None:
    r = http.get("/v1/credits")
    assert r.status_code == 401 and r.json["error"]["code"] == "MISSING_API_KEY"
    assert r.json["error"]["message"] == "Missing API key: send `Authorization: Bearer <key>`"
