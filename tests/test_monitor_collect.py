"""A synchronous call is charged only once its answer reaches the intake that waits for it: an intake
that stops reading, or is killed mid-call (kill -9), charges nothing, its call's reservation is
refunded by the reaper; an answer that reaches its intake after the refund is not charged either.
The worker's side is played with the scheduler's own ops (the same Lua scripts a worker runs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskq import calls
from taskq.connection import async_connect
from taskq.metrics import RedisCollector
from taskq.scheduler import Reaped, reap
from taskq.store import Store
from tests.support.clients import Client
from tests.support.env import PROVIDER_ENV, REAL_REDIS_URL
from tests.support.monitor import finish, raw_request, take, waiting
from tests.support.processes import Processes, start_intake
from tests.support.scheduler import Scheduler
from tests.support.tasks import counters, request

COLLECT_MS = 30_000  # queue_lib.lua's SYNC_COLLECT_MS


pytestmark = pytest.mark.redis


@pytest.fixture
def store(real_redis: Client, settings: Any) -> Store:
    return Store(real_redis, settings.shards)


def reap_at(store: Store, org_id: str, now: int) -> Reaped:
    op = reap(store.org(org_id).shard, now=now, max_attempts=3, retention=3600)
    return Scheduler(store.client).run(op)


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_collected_call_is_charged_once_and_an_uncollected_one_never(
    store: Store, make_org: Any, settings: Any
) -> None:
    org_id, _ = make_org(credits=50)
    org = store.org(org_id)
    shard = org.shard

    async def main() -> tuple[calls.Admitted, str]:
        client = async_connect(REAL_REDIS_URL, max_connections=8)
        box = calls.Calls(client, settings)
        try:
            paid = await box.admit(org, request())
            assert isinstance(paid, calls.Admitted)
            [task] = take(store, org_id)
            assert finish(store, task, {"text": "answer", "sources": []})
            done = await box.outcome(org, paid.task_id, None)
            assert done.status == "COMPLETED" and '"answer"' in done.body
            assert counters(store, org_id)["credits"] == 50 - paid.cost, "charged once handed over"
            # This process stops reading its inbox while a call runs: its answer is never collected.
            left = await box.admit(org, request(prompt="left"))
            assert isinstance(left, calls.Admitted)
            return paid, left.task_id
        finally:
            await box.aclose()
            await client.aclose()

    paid, left = asyncio.run(main())
    assert counters(store, org_id)["reserved"] == 7
    assert store.client.hget(shard.task(paid.task_id), "charged") == str(paid.cost)
    reap_at(store, org_id, now_ms() + COLLECT_MS + 1000)
    assert counters(store, org_id)["credits"] == 50 - paid.cost, "the reaper leaves a collected call alone"
    [task] = take(store, org_id)
    assert finish(store, task, {"text": "unread", "sources": []})
    c = counters(store, org_id)
    assert (c["credits"], c["reserved"]) == (50 - paid.cost, 7), "completed, not charged"
    reap_at(store, org_id, now_ms() + COLLECT_MS + 1000)
    c = counters(store, org_id)
    assert (c["credits"], c["reserved"]) == (50 - paid.cost, 0), "refunded once its window is over"
    late = store.scripts["collect"](keys=[shard.collect], args=[shard.tag, left])
    assert late == [0], "an answer collected after its refund is not charged"
    assert counters(store, org_id)["credits"] == 50 - paid.cost
    assert store.client.hget(shard.task(left), "charged") == "0"


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path / "logs")
    yield processes
    processes.close()


@pytest.mark.redis
@pytest.mark.slow
def test_an_intake_killed_mid_call_charges_nothing(procs: Processes, real_redis: Client) -> None:
    env = {"TASKQ_REDIS_URL": REAL_REDIS_URL, "TASKQ_LOG_LEVEL": "WARNING", **PROVIDER_ENV}
    base = start_intake(procs, env, workers=1)
    [intake] = procs.started
    store = Store(real_redis)
    org_id, key = store.create_org("crash", credits=100, concurrency=10, queue_limit=100)
    org = store.org(org_id)
    client = raw_request(base, key, {"prompt": "answer me", "country": "US"})
    waiting(lambda: store.org_fields(org_id).get("q11") == "1")
    [task] = take(store, org_id)  # a worker has the call...
    procs.kill_group(intake)  # ...when its intake dies
    intake.wait(10)
    client.close()
    assert finish(store, task, {"text": "nobody reads this", "sources": []}), "the call completes"
    c = counters(store, org_id)
    assert (c["credits"], c["reserved"], c["inflight"]) == (100, 7, 0), "completed, not charged"
    assert store.client.hget(org.shard.task(task.id), "status") == "COMPLETED"

    assert reap_at(store, org_id, now_ms()).requeued == 0
    assert counters(store, org_id)["reserved"] == 7, "refunded only once its collection window is over"
    reap_at(store, org_id, now_ms() + COLLECT_MS + 1000)
    c = counters(store, org_id)
    assert (c["credits"], c["reserved"], c["inflight"]) == (100, 0, 0), "refunded: nothing charged"
    assert store.client.hget(org.shard.task(task.id), "charged") == "0"
    assert int(real_redis.hget(org.shard.metrics, "sync_uncollected") or 0) == 1
    [family] = [
        f for f in RedisCollector(real_redis, store.shards).collect() if f.name == "taskq_sync_uncollected"
    ]
    assert [s.value for s in family.samples] == [1], "operators see it in /metrics"
