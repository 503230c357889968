"""/metrics and the dashboard data: operator-authenticated, and their numbers move with the work done."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskq.api import create_app
from tests.support.orgs import auth
from tests.support.settings import make_settings


@pytest.fixture
def ops(rclient: Any) -> Any:
    return create_app(make_settings(admin_token="admin-secret"), client=rclient).test_client()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_operator_endpoints_need_the_admin_token(ops: Any) -> None:
    assert ops.get("/metrics").status_code == 401
    assert ops.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert ops.get("/dashboard/data?token=nope").status_code == 401
    signed_in = ops.get("/dashboard?token=admin-secret")  # the token is traded for a session cookie
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/dashboard"
    assert ops.get("/dashboard").status_code == 200


def test_admission_counters_move_with_work(ops: Any, make_org: Any) -> None:
    _, key = make_org(credits=10)
    batch = [
        {"taskType": "GEMINI", "payload": {"prompt": "x", "country": "US"}, "idempotencyKey": "a"},
        {"taskType": "GEMINI", "payload": {"prompt": "x", "country": "US"}, "idempotencyKey": "a"},
        {"taskType": "GEMINI", "payload": {"prompt": "x", "country": "us"}},
        {"taskType": "GEMINI", "payload": {"prompt": "y", "country": "US"}, "priority": 7},
        {"taskType": "GEMINI", "payload": {"prompt": "z", "country": "US"}},
    ]
    ops.post("/v1/async/task/batch", json=batch, headers=auth(key))
    text = ops.get("/metrics", headers={"Authorization": "Bearer admin-secret"}).data.decode()
    s = samples(text)
    assert s[("taskq_admissions_total", (("code", ""), ("outcome", "admitted")))] == 2
    assert s[("taskq_admissions_total", (("code", "RESOURCE_ALREADY_EXISTS"), ("outcome", "rejected")))] == 1
    assert s[("taskq_admissions_total", (("code", "VALIDATION_ERROR"), ("outcome", "rejected")))] == 1
    assert s[("taskq_admissions_total", (("code", "INSUFFICIENT_CREDITS"), ("outcome", "rejected")))] == 1
    assert s[("taskq_queue_depth", (("priority", "7"),))] == 1
    assert s[("taskq_queue_depth", (("priority", "1"),))] == 1
    data = ops.get("/dashboard/data", headers={"Authorization": "Bearer admin-secret"}).json
    assert data["series"][-1]["admitted"] == 2
    assert sum(o["queued"] for o in data["orgs"]) == 2
