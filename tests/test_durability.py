"""TASKQ_DURABILITY against real servers: group commits on a valkey-server with an append-only file,
the 503 that says the outcome is unknown (and that resubmitting with the same idempotency keys is safe),
and the refusal to start on a server that cannot give what was asked."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskq import keys
from taskq.api import create_app
from taskq.connection import SentinelURL, connect
from taskq.durability import AsyncCommitter, Committer, DurabilityUnsupported, Policy, check_server
from taskq.errors import Unconfirmed
from taskq.settings import Settings
from taskq.store import Store
from tests.support.clients import async_client, sync_client
from tests.support.env import IN_CI
from tests.support.intake import ServedIntake
from tests.support.orgs import auth
from tests.support.redis_server import PrivateRedis
from tests.support.sentinel import Node
from tests.support.settings import make_settings

pytestmark = pytest.mark.redis


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    server = Node(tmp_path / "aof", appendfsync="always").start()
    yield server
    server.stop()


def policy_of(settings: Settings) -> Policy:
    """The policy of settings whose durability is not ``none``."""
    policy = Policy.of(settings)
    assert policy is not None, settings.durability
    return policy


def test_a_commit_waits_for_the_local_aof_and_covers_writes_of_other_connections(node: Node) -> None:
    settings = make_settings(durability="local")
    writer, committer_client = node.client(), node.client()
    committer = Committer(committer_client, policy_of(settings))
    writer.set("written elsewhere", "1")
    committer.confirm()
    assert committer_client.get(keys.COMMIT_MARK) == "1"
    # WAITAOF answered for the marker's offset, later than the other connection's write
    info = writer.info("persistence")
    assert int(info["aof_enabled"]) == 1
    assert committer.commits == 1


def test_concurrent_confirms_share_commits(node: Node) -> None:
    committer = Committer(node.client(), policy_of(make_settings(durability="local")))
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def request() -> None:
        barrier.wait()
        try:
            for _ in range(20):
                committer.confirm()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    print(f"\n320 confirms from 16 threads: {committer.commits} commits")
    assert committer.commits < 320  # callers that came during a commit shared the next one


def test_async_confirms_share_one_commit(node: Node) -> None:
    async def main() -> int:
        client = async_client(f"redis://127.0.0.1:{node.port}")
        try:
            committer = AsyncCommitter(client, policy_of(make_settings(durability="local")))
            await client.set("a", "1")
            await asyncio.gather(*(committer.confirm() for _ in range(100)))
            return committer.commits
        finally:
            await client.aclose()

    assert asyncio.run(main()) <= 2  # the first leaves at once; the other 99 share the next


def test_a_write_without_its_replicas_is_unconfirmed(node: Node) -> None:
    settings = make_settings(durability="replica", durability_replicas=1, durability_timeout_ms=100)
    warnings = check_server(node.client(), settings)
    assert any("0 are connected" in w for w in warnings)
    committer = Committer(node.client(), policy_of(settings))
    with pytest.raises(Unconfirmed, match="outcome is unknown"):
        committer.confirm()


def test_the_intake_answers_503_outcome_unknown_and_a_resubmission_with_the_same_keys_is_safe(
    node: Node,
) -> None:
    client = node.client()
    store = Store(client)
    org, key = store.create_org("durable", credits=1000, concurrency=10, queue_limit=1000)
    strict = make_settings(durability="replica", durability_replicas=1, durability_timeout_ms=100)
    batch = [
        {"taskType": "CHATGPT", "payload": {"prompt": f"q{i}", "country": "US"}, "idempotencyKey": f"k{i}"}
        for i in range(3)
    ]
    unconfirmed = create_app(strict, client=client).test_client()
    answer = unconfirmed.post("/v1/async/task/batch", json=batch, headers=auth(key))
    assert answer.status_code == 503
    error = answer.get_json()["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    assert "outcome is unknown" in error["message"] and "same idempotency keys is safe" in error["message"]
    assert error["details"] == {"outcome": "unknown", "durability": "replica"}
    tasks = store.org(org).shard.org_tasks(org)
    assert client.llen(tasks) == 3  # it was applied: only its durability was not confirmed

    # The client resubmits (here to an intake whose commits succeed): nothing is admitted twice, and
    # the answer names each task admitted the first time.
    durable = create_app(make_settings(durability="local"), client=client).test_client()
    again = durable.post("/v1/async/task/batch", json=[*batch, {**batch[0], "idempotencyKey": "k3"}],
                         headers=auth(key))  # fmt: skip
    assert again.status_code == 200
    results = again.get_json()["results"]
    assert [r["success"] for r in results] == [False, False, False, True]
    assert {r["error"]["code"] for r in results[:3]} == {"RESOURCE_ALREADY_EXISTS"}
    assert all(r["error"]["details"]["taskId"] for r in results[:3])
    assert client.llen(tasks) == 4
    # reads are confirmed too: an answer never shows what a crash could take back
    assert durable.get("/v1/credits", headers=auth(key)).status_code == 200
    assert unconfirmed.get("/v1/credits", headers=auth(key)).status_code == 503
    # requests of no organization are not held up (nothing of an org to confirm)
    assert unconfirmed.get("/v1/credits").status_code == 401


def test_durability_refuses_a_server_without_an_append_only_file() -> None:
    server = PrivateRedis().start()  # appendonly no
    try:
        with pytest.raises(DurabilityUnsupported, match="appendonly yes"):
            create_app(make_settings(durability="local"), client=sync_client(server.url))
    finally:
        server.stop()


def test_durability_refuses_a_server_older_than_7_2(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None or b"v=7.0" not in subprocess.run([binary, "--version"], capture_output=True).stdout:
        if IN_CI:
            raise AssertionError("CI installs Debian's redis-server 7.0 (.ci/run): it is missing")
        pytest.skip("needs Debian's redis-server 7.0 (no WAITAOF)")
    server = Node(tmp_path / "old", binary=binary).start()
    try:
        for mode in ("local", "replica"):
            with pytest.raises(DurabilityUnsupported, match=r"needs the WAITAOF command .* Redis 7\.0"):
                check_server(server.client(), make_settings(durability=mode))
        assert check_server(server.client(), make_settings(durability="none")) == []
    finally:
        server.stop()


def test_taskq_serve_refuses_to_start_with_a_clear_message(tmp_path: Path) -> None:
    server = PrivateRedis().start()  # no AOF
    try:
        env = {**os.environ, "TASKQ_REDIS_URL": server.url, "TASKQ_DURABILITY": "local"}
        for argv in (["serve", "--port", "0"], ["worker"]):
            done = subprocess.run([sys.executable, "-m", "taskq", *argv], env=env, capture_output=True,
                                  timeout=60, text=True)  # fmt: skip
            assert done.returncode == 2, done.stderr
            assert "TASKQ_DURABILITY=local needs the server's append-only file" in done.stderr
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        (
            "redis+sentinel://h1:26379,h2:26380/mymaster",
            SentinelURL([("h1", 26379), ("h2", 26380)], "mymaster"),
        ),
        ("redis+sentinel://h1/mymaster/3", SentinelURL([("h1", 26379)], "mymaster", 3)),
        ("rediss+sentinel://:pw@h1:1/m/0", SentinelURL([("h1", 1)], "m", 0, None, "pw", True)),
    ],
)
def test_sentinel_urls(url: str, parsed: SentinelURL) -> None:
    assert SentinelURL.parse(url) == parsed


@pytest.mark.parametrize(
    "url", ["redis+sentinel://h1:26379", "redis+sentinel:///m", "redis+sentinel://h:x/m"]
)
def test_bad_sentinel_urls_are_refused_clearly(url: str) -> None:
    with pytest.raises(ValueError, match="sentinel"):
        connect(url)


def test_a_monitor_call_answered_on_the_loop_waits_for_durability_too(node: Node) -> None:
    client = node.client()
    _, key = Store(client).create_org("durable", credits=1000, concurrency=0, queue_limit=1000)
    call = {"prompt": "q", "country": "US"}
    strict = make_settings(durability="replica", durability_replicas=1, durability_timeout_ms=100)
    with ServedIntake(strict, client, node.url) as unconfirmed:
        answer = unconfirmed.post("/v1/monitor/chatgpt", call, key)
        assert answer.status_code == 503, answer.text  # refused for concurrency (429), not confirmed
        assert answer.json()["error"]["details"] == {"outcome": "unknown", "durability": "replica"}
    with ServedIntake(make_settings(durability="local"), client, node.url) as durable:
        answer = durable.post("/v1/monitor/chatgpt", call, key)
        assert answer.status_code == 429 and answer.json()["error"]["code"] == "CONCURRENCY_LIMIT_EXCEEDED"
