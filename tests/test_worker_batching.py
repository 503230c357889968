"""The drain's hot-path plumbing on a real Redis: outcomes sharing round trips stay fenced one by one."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import httpx
import pytest

from taskq.asyncops import BATCH_GATHER, AsyncScheduler
from taskq.errors import Code
from taskq.scheduler import Claimed, Claims, claim, complete, fail, release
from taskq.settings import Settings
from taskq.store import Store
from taskq.worker.clients import steady_gc
from taskq.worker.http import ProviderClient
from tests.support.clients import Client, async_client
from tests.support.env import REAL_REDIS_URL
from tests.support.scheduler import Scheduler
from tests.support.settings import make_settings
from tests.support.tasks import admit_tasks, counters, request, status_of

pytestmark = pytest.mark.redis

CAPS: dict[str, int | None] = {"CHATGPT": None}


def _setup(real_redis: Client, n: int) -> tuple[Store, Settings, str, list[Claimed]]:
    store, settings = Store(real_redis), make_settings()
    org = store.create_org("t", credits=10_000, concurrency=100, queue_limit=10_000)[0]
    admit_tasks(store, settings, org, [request(prompt=f"p{i}") for i in range(n)])
    shard = store.org(org).shard
    tasks = Scheduler(real_redis).run(claim(shard, CAPS, now=1_000, lease_ms=60_000, k=n))
    assert len(tasks) == n
    return store, settings, org, tasks


def _run(coro_fn: Any, url: str = REAL_REDIS_URL) -> Any:
    async def main() -> Any:
        client = async_client(url)
        try:
            return await coro_fn(AsyncScheduler(client))
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_outcomes_submitted_together_are_each_fenced_and_applied(real_redis: Client) -> None:
    store, _, org, tasks = _setup(real_redis, 6)
    stale = tasks[5]
    # its holder lost it: this worker's ack must not land
    Scheduler(real_redis).run(release(stale, now=1, retention=60))
    ops = [complete(t, {"text": t.id}, now=2_000, retention=60) for t in tasks[:4]]
    ops.append(fail(tasks[4], Code.PROVIDER_REJECTED, "boom", now=2_000, retention=60))
    ops.append(complete(stale, {"text": "late"}, now=2_000, retention=60))

    async def submit(ops_runner: AsyncScheduler) -> list[bool]:
        return list(await asyncio.gather(*(ops_runner.run_batched(op) for op in ops)))

    assert _run(submit) == [True, True, True, True, True, False]
    assert [status_of(store, org, t.id) for t in tasks] == ["COMPLETED"] * 4 + ["FAILED", "QUEUED"]
    c = counters(store, org)
    assert (c["inflight"], c["queued"], c["credits"]) == (0, 1, 10_000 - 4 * tasks[0].cost)


def test_batched_outcomes_survive_a_script_flush(private_redis: Client) -> None:
    store, _, org, tasks = _setup(private_redis, 3)
    private_redis.script_flush()  # e.g. Redis restarted: the pipelined EVALSHAs meet NOSCRIPT

    async def submit(ops_runner: AsyncScheduler) -> list[bool]:
        ops = [complete(t, {"text": "ok"}, now=2_000, retention=60) for t in tasks]
        return list(await asyncio.gather(*(ops_runner.run_batched(op) for op in ops)))

    port = private_redis.connection_pool.connection_kwargs["port"]
    assert _run(submit, f"redis://127.0.0.1:{port}/0") == [True, True, True]
    assert {status_of(store, org, t.id) for t in tasks} == {"COMPLETED"}


def test_several_claims_in_one_round_trip_come_back_in_order(real_redis: Client) -> None:
    store, settings = Store(real_redis), make_settings()
    org = store.create_org("t", credits=10_000, concurrency=100, queue_limit=10_000)[0]
    ids = admit_tasks(store, settings, org, [request(prompt=f"p{i}") for i in range(10)])
    shard = store.org(org).shard

    async def claims(ops_runner: AsyncScheduler) -> list[Claims]:
        return await ops_runner.run_many([claim(shard, CAPS, now=1_000, lease_ms=60_000, k=4)] * 3)

    got = _run(claims)
    assert [len(batch) for batch in got] == [4, 4, 2]
    assert [t.id for batch in got for t in batch] == ids  # FIFO, as one claim call after another


def test_a_caller_cancelled_before_its_outcome_left_sends_nothing(real_redis: Client) -> None:
    store, _, org, tasks = _setup(real_redis, 2)

    async def submit(ops_runner: AsyncScheduler) -> bool:
        first, doomed = (
            asyncio.ensure_future(ops_runner.run_batched(complete(t, {}, now=2_000, retention=60)))
            for t in tasks
        )
        await asyncio.sleep(0)  # both queued, nothing sent yet
        doomed.cancel()
        return await first

    assert _run(submit) is True
    assert [status_of(store, org, t.id) for t in tasks] == ["COMPLETED", "PROCESSING"]


def _script_calls(client: Client) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_lingering_outcomes_arriving_apart_share_one_script_call(private_redis: Client) -> None:
    store, _, org, tasks = _setup(private_redis, 4)
    port = private_redis.connection_pool.connection_kwargs["port"]
    private_redis.config_resetstat()

    async def submit(ops_runner: AsyncScheduler) -> list[bool]:
        pending = []
        for t in tasks:  # completions of slow calls come one at a time
            op = complete(t, {"text": "ok"}, now=2_000, retention=60)
            pending.append(asyncio.ensure_future(ops_runner.run_batched(op, linger=30.0)))
            await asyncio.sleep(0.005)
        # A caller that may not wait (a synchronous call's outcome) sends the lingering ones at once.
        last = complete(tasks[-1], {"text": "again"}, now=2_000, retention=60)
        pending.append(asyncio.ensure_future(ops_runner.run_batched(last)))
        return list(await asyncio.wait_for(asyncio.gather(*pending), 10))

    assert _run(submit, f"redis://127.0.0.1:{port}/0") == [True, True, True, True, False]
    assert _script_calls(private_redis) == 1  # five acks, one merged ack call
    assert {status_of(store, org, t.id) for t in tasks} == {"COMPLETED"}
    assert counters(store, org)["inflight"] == 0


def test_a_lingering_round_trip_leaves_once_a_batch_has_gathered(real_redis: Client) -> None:
    store, _, org, tasks = _setup(real_redis, BATCH_GATHER)

    async def submit(ops_runner: AsyncScheduler) -> list[bool]:
        ops = [complete(t, {"text": "ok"}, now=2_000, retention=60) for t in tasks]
        pending = [ops_runner.run_batched(op, linger=30.0) for op in ops]
        return list(await asyncio.wait_for(asyncio.gather(*pending), 10))

    assert _run(submit) == [True] * BATCH_GATHER
    assert {status_of(store, org, t.id) for t in tasks} == {"COMPLETED"}


def test_provider_client_keeps_no_cookies() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert "cookie" not in request.headers
        return httpx.Response(200, headers={"set-cookie": "sticky=1; Path=/"}, json={})

    async def main() -> None:
        client = ProviderClient(transport=httpx.MockTransport(handler))
        try:
            for _ in range(2):
                await client.get("http://upstream.test/x")
            assert not client.cookies
        finally:
            await client.aclose()

    asyncio.run(main())


def test_steady_gc_restores_the_collector() -> None:
    before = gc.get_threshold()
    with steady_gc():
        assert gc.get_threshold()[0] >= 5000
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
