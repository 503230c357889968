"""Shared fixtures: settings, Redis (fakeredis with Lua, or the real server), the intake app, orgs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis

from taskq.settings import Settings
from taskq.store import Store
from tests.support.redis_server import PrivateRedis, session_server

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: TASKQ_TEST_REDIS_URL when given, else a private server this test process starts and stops.
EXTERNAL_REDIS_URL = os.environ.get("TASKQ_TEST_REDIS_URL") or None
REAL_REDIS_URL = EXTERNAL_REDIS_URL or session_server().url
#: No taskq process a test starts looks at the Redis on 6379 (without TASKQ_REDIS_URL it would check
#: whether that one is free to use): tests that need a "local" Redis name a private one.
os.environ.setdefault("TASKQ_LOCAL_REDIS_URL", "redis://127.0.0.1:1/0")

ALL_KEYS = {
    "openai_api_key": "sk-test",
    "gemini_api_key": "g-test",
    "perplexity_api_key": "pplx-test",
    "xai_api_key": "xai-test",
    "serpapi_api_key": "serp-test",
}


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: nothing read from the environment, every provider configured."""
    values: dict[str, Any] = {"upstream_base_url": "http://127.0.0.1:9", **ALL_KEYS}
    values.update(overrides)
    return Settings(**values)


def real_redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REAL_REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as exc:
        if IN_CI:
            raise RuntimeError(f"CI needs a real Redis at {REAL_REDIS_URL}: {exc}") from exc
        pytest.skip(f"no Redis at {REAL_REDIS_URL} (set TASKQ_TEST_REDIS_URL); mandatory in CI")
    return client


@pytest.fixture
def real_redis() -> Iterator[redis.Redis]:
    client = real_redis_client()
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def private_redis() -> Iterator[redis.Redis]:
    """A real Redis this test process started: the only kind that server-wide commands may touch."""
    server = PrivateRedis().start() if EXTERNAL_REDIS_URL else None
    client = redis.Redis.from_url(server.url if server else REAL_REDIS_URL, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
    if server is not None:
        server.stop()


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.redis)])
def rclient(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Each test using this runs on fakeredis (with Lua) and on the real Redis."""
    if request.param == "fake":
        client = fakeredis.FakeRedis(decode_responses=True)
        yield client
        client.close()
    else:
        yield request.getfixturevalue("real_redis")


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def store(rclient: Any, settings: Settings) -> Store:
    return Store(rclient, settings.shards)


@pytest.fixture
def app(settings: Settings, rclient: Any) -> Any:
    from taskq.api import create_app

    application = create_app(settings, client=rclient)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def http(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def make_org(store: Store) -> Callable[..., tuple[str, str]]:
    """Factory: create an organization, return (org id, api key)."""

    def create(credits: int = 10_000, concurrency: int = 100, queue_limit: int = 100_000) -> tuple[str, str]:
        return store.create_org("test", credits=credits, concurrency=concurrency, queue_limit=queue_limit)

    return create


def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}
