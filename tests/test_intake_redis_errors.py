"""What the intake answers when Redis answers with an error: 500 for a failing script or damaged data
(a taskq problem, logged), 503 when Redis is unreachable or refusing work. Real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from taskq.api import create_app
from taskq.store import Store
from tests.support.clients import Client, inspected, sync_client
from tests.support.orgs import auth
from tests.support.settings import make_settings

pytestmark = pytest.mark.redis

TASK = {"taskType": "CHATGPT", "payload": {"prompt": "What is taskq?", "country": "US"}}


@pytest.fixture
def intake(private_redis: Client) -> Iterator[tuple[Any, Store, str, str]]:
    """On a private server: one test sets the server's maxmemory."""
    settings = make_settings()
    store = Store(private_redis, settings.shards)
    org, key = store.create_org("errors", credits=1_000, concurrency=10, queue_limit=100)
    yield create_app(settings, client=private_redis).test_client(), store, org, key


def test_a_script_failing_on_damaged_data_is_a_500_and_admits_nothing(
    intake: tuple[Any, Store, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    http, store, org, key = intake
    shard = store.org(org).shard
    store.client.delete(shard.seq)
    store.client.hset(shard.seq, "damaged", 1)  # the admission script's INCRBY fails: WRONGTYPE
    r = http.post("/v1/async/task", json=TASK, headers=auth(key))
    assert r.status_code == 500, r.json
    assert r.json["error"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "WRONGTYPE" in caplog.text and "@user_script" in caplog.text
    assert store.client.hget(shard.org(org), "queued") in (None, "0")
    assert inspected(store.client).llen(shard.org_tasks(org)) == 0


def test_redis_refusing_writes_is_a_503(intake: tuple[Any, Store, str, str]) -> None:
    http, store, org, key = intake
    old = store.client.config_get("maxmemory")["maxmemory"]
    try:
        inspected(store.client).config_set("maxmemory", 1)  # every write: OOM command not allowed
        r = http.post("/v1/async/task", json=TASK, headers=auth(key))
    finally:
        inspected(store.client).config_set("maxmemory", old)
    assert r.status_code == 503, r.json
    assert r.json["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert store.client.hget(store.org(org).shard.org(org), "queued") in (None, "0")


def test_an_unreachable_redis_is_a_503() -> None:
    dead = sync_client("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    http: Any = create_app(make_settings(), client=dead).test_client()
    r = http.post("/v1/async/task", json=TASK, headers=auth("sk_live_" + "0" * 32))
    assert r.status_code == 503, r.json
    assert r.json["error"]["code"] == "SERVICE_UNAVAILABLE"
