"""The workers' schedule loop on a real Redis: several loops fire each occurrence once, and idle loops
send Redis nothing between firings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from taskq import keys, schedules
from taskq.schemas.tasks import epoch_ms
from taskq.store import Store
from taskq.worker.clients import redis_client
from taskq.worker.schedules import run_schedules
from tests.support.clients import Client, sync_client
from tests.support.env import REAL_REDIS_URL
from tests.support.settings import make_settings

pytestmark = pytest.mark.redis

TASK = {"taskType": "CHATGPT", "payload": {"prompt": "hi", "country": "US"}}
SETTINGS = make_settings(redis_url=REAL_REDIS_URL)


async def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def url_of(client: Client) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def with_loops(n: int, body: Callable[[Client], Any], url: str = REAL_REDIS_URL) -> Any:
    """Run n schedule loops (each with its own clients, as n worker processes would) around body."""
    cfg = make_settings(redis_url=url)

    async def main() -> Any:
        stop = asyncio.Event()
        clients = [redis_client(cfg) for _ in range(n)]
        loops = [asyncio.create_task(run_schedules(c, cfg, stop)) for c in clients]
        probe = sync_client(url)
        try:
            await wait_for(
                lambda: probe.pubsub_numsub(keys.SCHEDULES_CHANGED)[0][1] == n, 10, "subscriptions"
            )
            return await body(probe)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*loops), 10)
            for c in clients:
                await c.aclose()
            probe.close()

    return asyncio.run(main())


def test_two_loops_fire_a_new_schedule_each_occurrence_once(real_redis: Client) -> None:
    store = Store(real_redis)
    org_id, _ = store.create_org("loop", credits=10_000, concurrency=10, queue_limit=1000)
    org = store.org(org_id)

    async def body(probe: Client) -> dict[str, Any]:
        # Both loops are idle with no schedule at all: the new one wakes them (pub/sub), on time.
        made = schedules.create(store, SETTINGS, org, {"name": "s", "everySeconds": 1, "tasks": [TASK]})
        await wait_for(lambda: probe.llen(org.shard.sched_runs(made["id"])) >= 4, 20, "four firings")
        return made

    made = with_loops(2, body)
    runs = schedules.get(store, org, made["id"])["runs"]
    ats = [epoch_ms(r["at"]) for r in reversed(runs)]
    first = epoch_ms(made["nextRunAt"])
    assert ats[0] == first and all((at - first) % 1000 == 0 for at in ats)
    assert ats == sorted(set(ats)), "an occurrence fired twice"
    task_ids = real_redis.lrange(org.shard.org_tasks(org_id), 0, -1)
    batches = [str(real_redis.hget(org.shard.task(str(t)), "batch")) for t in task_ids]
    assert len(task_ids) == len(runs) and sorted(batches) == sorted(r["batchId"] for r in runs)


def test_idle_loops_send_nothing_between_firings(private_redis: Client) -> None:
    """Commands Redis processes over a quiet second: with two idle loops waiting for a schedule an hour
    away, the same as with no loop at all (the anchor, measured first in the same test)."""
    url = url_of(private_redis)
    store = Store(private_redis)
    org_id, _ = store.create_org("idle", credits=100, concurrency=10, queue_limit=100)
    schedules.create(
        store, SETTINGS, store.org(org_id), {"name": "hourly", "everySeconds": 3600, "tasks": [TASK]}
    )

    def commands(probe: Client) -> int:
        return int(probe.info("stats")["total_commands_processed"])

    async def quiet_second(probe: Client) -> int:
        await asyncio.sleep(0.3)  # the loops' first look at T:scheds is done
        before = commands(probe)
        await asyncio.sleep(1.0)
        return commands(probe) - before

    async def anchor(probe: Client) -> int:
        return await quiet_second(probe)

    probe = sync_client(url)
    try:
        baseline = asyncio.run(anchor(probe))
    finally:
        probe.close()
    with_two = with_loops(2, quiet_second, url)
    assert with_two == baseline, f"{with_two - baseline} commands from idle schedule loops in one second"
