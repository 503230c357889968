"""Fuzzing the intake with schemathesis against its own OpenAPI document: no 5xx, 4xx in the envelope.
The requests go to the served ASGI intake on the real Redis (monitor calls on the loop, the rest
through Flask)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from taskq.api import create_app
from taskq.store import Store
from tests.support.clients import fake_client, sync_client
from tests.support.env import REAL_REDIS_URL
from tests.support.intake import ServedIntake
from tests.support.settings import make_settings

SETTINGS = make_settings(rate_limit_per_second=10**9, webhook_resolve_timeout_seconds=0.01)
_client = fake_client()
_app: Any = create_app(SETTINGS, client=_client)
_org, _key = Store(_client).create_org("fuzz", credits=10**9, concurrency=0, queue_limit=10**9)

# The goto resolver calls Google (here an address nothing answers): a valid link is a 502 by design.
schema = schemathesis.openapi.from_dict(_app.test_client().get("/openapi.json").json).exclude(
    path="/v1/monitor/google/goto"
)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, str]]:
    """The intake on the real Redis and an API key of an organization whose concurrency is 0: a valid
    monitor call is refused at once (429) rather than waiting for a worker."""
    client = sync_client(REAL_REDIS_URL)
    _, key = Store(client).create_org("fuzz", credits=10**9, concurrency=0, queue_limit=10**9)
    with ServedIntake(SETTINGS, client, REAL_REDIS_URL) as intake:
        yield intake.base, key
    client.close()


@pytest.mark.redis
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx_and_errors_use_the_envelope(case: Any, served: tuple[str, str]) -> None:
    base, key = served
    response = case.call(base_url=base, headers={**(case.headers or {}), "Authorization": f"Bearer {key}"})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert body["success"] is False
        assert isinstance(body["error"]["code"], str) and body["error"]["message"]
    case.validate_response(response, checks=[schemathesis.checks.not_a_server_error])


def test_openapi_document_lists_every_route() -> None:
    doc = _app.test_client().get("/openapi.json").json
    for path in [
        "/v1/async/task",
        "/v1/async/task/batch",
        "/v1/async/task/{taskId}",
        "/v1/async/status",
        "/v1/async/queue",
        "/v1/credits",
        "/v1/monitor/chatgpt",
        "/v1/monitor/google/news",
        "/v1/monitor/google/goto",
        "/v1/countries",
        "/v1/states",
    ]:
        assert path in doc["paths"]


@pytest.mark.parametrize("raw", [b"[" * 5000, b'[{"taskType": "GOOGLE", "payload": ' * 200])
def test_deep_or_broken_bodies_are_422(raw: bytes) -> None:
    r = _app.test_client().post(
        "/v1/async/task/batch",
        data=raw,
        headers={"Authorization": f"Bearer {_key}", "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.json["error"]["code"] == "VALIDATION_ERROR"
