"""Fixtures only (helpers live in tests/support/): Redis (fakeredis with Lua, or the real server),
settings, the intake app, and factories that make orgs, upstreams, drains and processes and clean up
after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskq.settings import Settings
from taskq.store import Store
from tests.support.clients import Client, fake_client, sync_client
from tests.support.drain import run_drain
from tests.support.env import EXTERNAL_REDIS_URL, REAL_REDIS_URL, real_redis_client
from tests.support.intake import ServedIntake
from tests.support.orgs import NewOrg, new_org
from tests.support.processes import Processes
from tests.support.redis_server import PrivateRedis
from tests.support.settings import make_settings
from tests.support.upstream import Upstream
from tests.support.waits import stuck_work


@pytest.fixture
def real_redis() -> Iterator[Client]:
    client = real_redis_client()
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def private_redis() -> Iterator[Client]:
    """A real Redis this test process started: the only kind that server-wide commands may touch."""
    server = PrivateRedis().start() if EXTERNAL_REDIS_URL else None
    client = sync_client(server.url if server else REAL_REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
    if server is not None:
        server.stop()


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.redis)])
def rclient(request: pytest.FixtureRequest) -> Iterator[Client]:
    """Each test using this runs on fakeredis (with Lua) and on the real Redis."""
    if request.param == "fake":
        client = fake_client()
        yield client
        client.close()
    else:
        yield request.getfixturevalue("real_redis")


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def store(rclient: Client, settings: Settings) -> Store:
    return Store(rclient, settings.shards)


@pytest.fixture
def app(settings: Settings, rclient: Client) -> Any:
    from taskq.api import create_app

    application = create_app(settings, client=rclient)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def http(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def make_intake(real_redis: Client) -> Iterator[Callable[..., ServedIntake]]:
    """Factory: make_intake(settings) serves the intake's ASGI app (monitor calls on the loop, the rest
    through Flask) on the real Redis; stopped after the test."""
    started: list[ServedIntake] = []

    def start(settings: Settings) -> ServedIntake:
        intake = ServedIntake(settings, real_redis, REAL_REDIS_URL).__enter__()
        started.append(intake)
        return intake

    yield start
    for intake in started:
        intake.__exit__()


@pytest.fixture
def make_org(store: Store) -> Callable[..., NewOrg]:
    """Factory: make_org(credits=, concurrency=, queue_limit=) creates an organization in `store`;
    returns (org id, api key)."""

    def create(**limits: int) -> NewOrg:
        return new_org(store, "test", **limits)

    return create


@pytest.fixture
def make_upstream() -> Iterator[Callable[..., Upstream]]:
    """Factory: make_upstream(latency, simulator=, **options) starts an Upstream; stopped after the test."""
    started: list[Upstream] = []

    def start(latency: float | str = 0.0, **options: Any) -> Upstream:
        upstream = Upstream(latency, **options).__enter__()
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.__exit__()


@pytest.fixture
def drain(real_redis: Client) -> Callable[..., Any]:
    """Factory: drain(settings, until, org=, concurrency=, timeout=) runs a drain in this process until
    until() holds and returns its stats; with org, a drain that ends first fails the test with what the
    org's shard still holds."""

    def run(settings: Settings, until: Callable[[], bool], *, org: str | None = None, **options: Any) -> Any:
        if org is not None and "stuck" not in options:
            shard = Store(real_redis).org(org).shard
            options["stuck"] = lambda: stuck_work(real_redis, shard, org)
        return run_drain(settings, until, **options)

    return run


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Child processes of the test (logs in tmp_path/logs), killed with their trees after it."""
    processes = Processes(tmp_path / "logs")
    yield processes
    processes.close()
