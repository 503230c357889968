"""Where the tests find Redis and the provider keys, and the size knobs of the proof tests."""

from __future__ import annotations

import os

import pytest
import redis

from tests.support.clients import Client, sync_client
from tests.support.redis_server import session_server

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: TASKQ_TEST_REDIS_URL when given, else a private server this test process starts and stops.
EXTERNAL_REDIS_URL = os.environ.get("TASKQ_TEST_REDIS_URL") or None
REAL_REDIS_URL = EXTERNAL_REDIS_URL or session_server().url
#: No taskq process a test starts looks at the Redis on 6379 (without TASKQ_REDIS_URL it would check
#: whether that one is free to use): tests that need a "local" Redis name a private one.
os.environ.setdefault("TASKQ_LOCAL_REDIS_URL", "redis://127.0.0.1:1/0")

#: Every provider configured, as Settings fields and as the environment of a taskq process.
ALL_KEYS = {
    "openai_api_key": "sk-test",
    "gemini_api_key": "g-test",
    "perplexity_api_key": "pplx-test",
    "xai_api_key": "xai-test",
    "serpapi_api_key": "serp-test",
}
PROVIDER_ENV = {f"TASKQ_{name.upper()}": value for name, value in ALL_KEYS.items()}


def env_int(name: str, default: int) -> int:
    """A size knob of a proof test: CI-friendly default, full size through the environment."""
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def real_redis_client() -> Client:
    """A client of the real Redis the tests share; a skip outside CI when there is none."""
    client = sync_client(REAL_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        if IN_CI:
            raise RuntimeError(f"CI needs a real Redis at {REAL_REDIS_URL}: {exc}") from exc
        pytest.skip(f"no Redis at {REAL_REDIS_URL} (set TASKQ_TEST_REDIS_URL); mandatory in CI")
    return client
