"""Query parameters: numbers are ASCII digits only, and no string in any query parameter of any GET
endpoint makes the intake answer 5xx (every 4xx in the error envelope)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskq.api import create_app
from taskq.store import Store
from tests.support.clients import fake_client
from tests.support.orgs import auth
from tests.support.settings import make_settings

_client = fake_client()
_app = create_app(make_settings(rate_limit_per_second=10**9), client=_client)
_org, _key = Store(_client).create_org("params", credits=10**9, concurrency=10, queue_limit=10**9)
_http: Any = _app.test_client()
_batch = _http.post(
    "/v1/async/task/batch",
    json=[
        {"taskType": "GOOGLE", "payload": {"query": f"q{i}", "country": "US"}, "priority": 5}
        for i in range(3)
    ],
    headers=auth(_key),
).json
_task = _batch["results"][0]["task"]["id"]

#: Every GET endpoint of the API (admin pages aside), with an existing task or batch where one is named.
GET_PATHS = [
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/v1/async/status",
    "/v1/async/queue",
    "/v1/credits",
    f"/v1/async/task/{_task}",
    f"/v1/async/task/{_task}/deliveries",
    f"/v1/async/batch/{_batch['batchId']}",
    f"/v1/async/batch/{_batch['batchId']}/results",
    "/v1/async/tasks",
    "/v1/async/schedules",
    "/v1/async/schedules/sch_unknown",
    "/v1/countries",
    "/v1/states",
]
#: Every query parameter any of them reads, and one none reads.
PARAMS = ["limit", "cursor", "status", "taskType", "priority", "batchId", "createdAfter", "model", "country",
          "other"]  # fmt: skip


def get(path: str, params: dict[str, str]) -> Any:
    return _http.get(f"{path}?{urlencode(params)}" if params else path, headers=auth(_key))


def test_every_get_endpoint_of_the_app_is_covered() -> None:
    rules = {
        r.rule for r in _app.url_map.iter_rules() if "GET" in (r.methods or ()) and r.endpoint != "static"
    }
    admin = {"/metrics", "/dashboard", "/dashboard/data"}
    covered = {"/v1/async/task/<task_id>", "/v1/async/task/<task_id>/deliveries",
               "/v1/async/batch/<batch_id>", "/v1/async/batch/<batch_id>/results",
               "/v1/async/schedules/<schedule_id>"}  # fmt: skip
    assert {r for r in rules if not r.startswith(tuple(admin))} - covered <= set(GET_PATHS)


#: superscript 2 (isdigit, but int() refuses it), Arabic-Indic 3 and fullwidth 1 (int() reads them), ...
NOT_ASCII_NUMBERS = [
    "\u00b2",
    "\u0663",
    "\u00b3",
    "\uff11",
    "\u2464",
    "1" * 5000,
    "-1",
    "+1",
    " 1",
    "1.0",
    "0x10",
]


@pytest.mark.parametrize("value", NOT_ASCII_NUMBERS)
@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/async/tasks", "limit"),
        ("/v1/async/tasks", "priority"),
        ("/v1/async/tasks", "cursor"),
        (f"/v1/async/batch/{_batch['batchId']}/results", "limit"),
        (f"/v1/async/batch/{_batch['batchId']}/results", "cursor"),
    ],
)
def test_numbers_in_anything_but_ascii_digits_are_a_validation_error(
    path: str, name: str, value: str
) -> None:
    r = get(path, {name: value})
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json["error"]["code"] == "VALIDATION_ERROR"
    assert r.json["error"]["details"][0]["field"] == name


def test_ascii_digits_still_work() -> None:
    r = get("/v1/async/tasks", {"limit": "2", "priority": "5"})
    assert r.status_code == 200 and len(r.json["tasks"]) == 2
    page = get("/v1/async/tasks", {"limit": "2", "cursor": r.json["nextCursor"]})
    assert page.status_code == 200 and len(page.json["tasks"]) == 1
    lines = get(f"/v1/async/batch/{_batch['batchId']}/results", {"limit": "1", "cursor": "0"})
    assert lines.status_code == 200


@given(
    path=st.sampled_from(GET_PATHS),
    params=st.dictionaries(st.sampled_from(PARAMS), st.text(max_size=30) | st.from_regex(r"\A[0-9]{1,40}\Z")),
)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_query_string_makes_a_get_endpoint_answer_5xx(path: str, params: dict[str, str]) -> None:
    r = get(path, params)
    assert r.status_code < 500, (path, params, r.status_code, r.text)
    if r.status_code >= 400:
        assert r.json["success"] is False and r.json["error"]["code"] and r.json["error"]["message"]
