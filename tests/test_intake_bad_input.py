"""Bad input gets a clear 4xx in the error envelope and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.orgs import auth

BATCH = "/v1/async/task/batch"
SINGLE = "/v1/async/task"


def ok_task(**extra: Any) -> dict[str, Any]:
    return {"taskType": "GEMINI", "payload": {"prompt": "hi", "country": "DE"}, **extra}


def assert_envelope(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True))
    body = r.get_json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"]["timestamp"].endswith("Z")
    return dict(body["error"])


def assert_nothing_queued(http: Any, key: str) -> None:
    assert http.get("/v1/async/status", headers=auth(key)).json["queuedTasks"] == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{",
        b'{"a": 1}',
        b"42",
        b"null",
        b"[]",
        b'"text"',
        b"\xff\xfe[]",
        b"[NaN]",
        json.dumps([ok_task()] * 501).encode(),
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=[
        "garbage",
        "truncated",
        "object",
        "number",
        "null",
        "empty",
        "string",
        "non-utf8",
        "nan",
        "501-items",
        "deep-nesting",
    ],
)
def test_malformed_batch_is_422_and_admits_nothing(http: Any, make_org: Any, raw: bytes) -> None:
    _, key = make_org()
    r = http.post(BATCH, data=raw, headers={**auth(key), "Content-Type": "application/json"})
    assert_envelope(r, 422, "VALIDATION_ERROR")
    assert_nothing_queued(http, key)


def test_wrong_content_type_is_415(http: Any, make_org: Any) -> None:
    _, key = make_org()
    r = http.post(BATCH, data=json.dumps([ok_task()]), headers={**auth(key), "Content-Type": "text/plain"})
    assert_envelope(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_nothing_queued(http, key)


def test_body_over_the_size_limit_is_413(app: Any, make_org: Any) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 1000
    _, key = make_org()
    r = app.test_client().post(
        BATCH, json=[ok_task(payload={"prompt": "x" * 2000, "country": "US"})], headers=auth(key)
    )
    assert_envelope(r, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (None, "body"),
        (42, "body"),
        ("task", "body"),
        ([], "body"),
        ({"taskType": "CHATGPT"}, "payload"),
        ({"payload": {"prompt": "x", "country": "US"}}, "taskType"),
        ({**ok_task(), "taskType": "BING"}, "taskType"),
        ({**ok_task(), "taskType": None}, "taskType"),
        (ok_task(priority=0), "priority"),
        (ok_task(priority=11), "priority"),
        (ok_task(priority=5.5), "priority"),
        (ok_task(priority="5"), "priority"),
        (ok_task(priority=True), "priority"),
        (ok_task(extra=1), "extra"),
        (ok_task(idempotencyKey=""), "idempotencyKey"),
        (ok_task(idempotencyKey=7), "idempotencyKey"),
        (ok_task(webhook={"url": "https://example.com", "secret": "x"}), "webhook.secret"),
        (ok_task(payload={"prompt": "", "country": "US"}), "payload.prompt"),
        (ok_task(payload={"prompt": "x" * 10_001, "country": "US"}), "payload.prompt"),
        (ok_task(payload={"prompt": "x" * 10_000_000, "country": "US"}), "payload.prompt"),
        (ok_task(payload={"prompt": "x", "country": "us"}), "payload.country"),
        (ok_task(payload={"prompt": "x", "country": "XX"}), "payload.country"),
        (ok_task(payload={"prompt": "x"}), "payload.country"),
        (ok_task(payload={"prompt": 5, "country": "US"}), "payload.prompt"),
        (ok_task(payload={"prompt": "x", "country": "US", "temperature": 1}), "payload.temperature"),
        (
            ok_task(payload={"prompt": "x", "country": "US", "include": {"markdown": "yes"}}),
            "payload.include.markdown",
        ),
        (ok_task(payload={"prompt": "x", "country": "US", "include": {"pdf": True}}), "payload.include.pdf"),
        (ok_task(payload={"prompt": "x", "country": "DE", "state": "CA"}), "payload"),
        (ok_task(payload={"prompt": "x", "country": "US", "state": "ZZ"}), "payload.state"),
        ({"taskType": "GOOGLE", "payload": {"query": "x", "country": "US", "pages": 11}}, "payload.pages"),
        ({"taskType": "GOOGLE", "payload": {"query": "x", "country": "US", "pages": 0}}, "payload.pages"),
        (
            {
                "taskType": "GOOGLE",
                "payload": {
                    "query": "x",
                    "country": "US",
                    "location": "Austin,Texas,United States",
                    "uule": "w+CAIQICI",
                },
            },
            "payload",
        ),
        ({"taskType": "GOOGLE", "payload": {"url": "https://example.com/search?q=x"}}, "payload"),
        (
            {"taskType": "GOOGLE", "payload": {"url": "https://www.google.com/search?q=x", "query": "x"}},
            "payload",
        ),
        ({"taskType": "GOOGLE", "payload": {"query": "x"}}, "payload"),
        ({"taskType": "GOOGLE", "payload": {"query": "x", "country": "US", "gl": "de"}}, "payload"),
        ({"taskType": "AIMODE", "payload": {"prompt": "x", "gl": "us", "device": "ios"}}, "payload.device"),
        ({"taskType": "GOOGLE_NEWS", "payload": {"query": "x", "gl": "zz"}}, "payload.gl"),
    ],
)
def test_invalid_task_is_a_per_task_error_naming_its_field(
    http: Any, make_org: Any, item: Any, field: str
) -> None:
    _, key = make_org()
    r = http.post(BATCH, json=[ok_task(), item], headers=auth(key))
    assert r.status_code == 200
    results = r.json["results"]
    assert results[0]["success"] is True
    error = results[1]["error"]
    assert error["code"] == "VALIDATION_ERROR"
    fields = [e["field"] for e in error["details"]["errors"]]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields
    assert http.get("/v1/async/status", headers=auth(key)).json["queuedTasks"] == 1

    single = http.post(
        SINGLE, data=json.dumps(item), headers={**auth(key), "Content-Type": "application/json"}
    )
    err = assert_envelope(single, 400, "VALIDATION_ERROR")
    assert isinstance(err["details"], list) and err["details"][0]["field"]
    assert http.get("/v1/async/status", headers=auth(key)).json["queuedTasks"] == 1


@pytest.mark.parametrize(
    "item",
    [
        {"taskType": "GOOGLE", "payload": {"url": "https://www.google.com/search?q=taskq"}},
        {
            "taskType": "GOOGLE",
            "payload": {"query": "x", "gl": "US", "hl": "en", "pages": 3, "device": "ios"},
        },
        {
            "taskType": "AIMODE",
            "payload": {"prompt": "x", "country": "GB", "location": "London,England,United Kingdom"},
        },
        {"taskType": "GOOGLE_NEWS", "payload": {"query": "x", "country": "FR", "hl": "fr"}},
        {
            "taskType": "CHATGPT",
            "payload": {
                "prompt": "x",
                "country": "US",
                "state": "CA",
                "include": {"searchQueries": True, "markdown": True},
            },
        },
        {"taskType": "PERPLEXITY", "payload": {"prompt": "é" * 10_000, "country": "JP"}},
    ],
)
def test_valid_payloads_of_each_shape_are_admitted(http: Any, make_org: Any, item: Any) -> None:
    _, key = make_org()
    r = http.post(SINGLE, json=item, headers=auth(key))
    assert r.status_code == 200, r.json


@pytest.mark.parametrize(
    ("item", "credits"),
    [
        ({"taskType": "CHATGPT", "payload": {"prompt": "x", "country": "US"}}, 5),
        (
            {
                "taskType": "CHATGPT",
                "payload": {"prompt": "x", "country": "US", "include": {"rawResponse": True, "ads": True}},
            },
            7,
        ),
        ({"taskType": "CHATGPT", "payload": {"prompt": "x", "country": "US", "state": "NY"}}, 7),
        ({"taskType": "GOOGLE", "payload": {"query": "x", "country": "US", "pages": 3}}, 7),
        (
            {
                "taskType": "GOOGLE",
                "payload": {"query": "x", "country": "US", "include": {"paaAioverview": True}},
            },
            5,
        ),
        ({"taskType": "GOOGLE_NEWS", "payload": {"query": "x", "country": "US", "pages": 2}}, 5),
        ({"taskType": "PERPLEXITY", "payload": {"prompt": "x", "country": "US"}}, 4),
    ],
)
def test_credits_to_charge_follow_the_price_table(http: Any, make_org: Any, item: Any, credits: int) -> None:
    _, key = make_org()
    r = http.post(SINGLE, json=item, headers=auth(key))
    assert r.json["credits"]["creditsToCharge"] == credits


def test_unconfigured_provider_is_refused_naming_its_setting(rclient: Any) -> None:
    from taskq.api import create_app
    from taskq.store import Store
    from tests.support.settings import make_settings

    settings = make_settings(openai_api_key=None)
    _, key = Store(rclient).create_org("o", credits=100, concurrency=1, queue_limit=10)
    http: Any = create_app(settings, client=rclient).test_client()
    r = http.post(
        BATCH,
        json=[
            {"taskType": "CHATGPT", "payload": {"prompt": "x", "country": "US"}},
            {"taskType": "GOOGLE_NEWS", "payload": {"query": "x", "country": "US"}},
        ],
        headers=auth(key),
    )
    first, second = r.json["results"]
    assert first["error"]["details"]["errors"] == [
        {"field": "taskType", "message": "CHATGPT is not configured on this server; set TASKQ_OPENAI_API_KEY"}
    ]
    assert second["success"] is True


def test_unknown_route_and_method_use_the_envelope(http: Any) -> None:
    assert_envelope(http.get("/v1/nope"), 404, "RESOURCE_NOT_FOUND")
    assert_envelope(http.put("/v1/async/task/batch"), 405, "METHOD_NOT_ALLOWED")


def test_malformed_task_id_is_404(http: Any, make_org: Any) -> None:
    _, key = make_org()
    assert_envelope(http.get("/v1/async/task/not-a-uuid", headers=auth(key)), 404, "RESOURCE_NOT_FOUND")
