"""A drain rides out a Redis outage: it keeps its calls, claims again once Redis answers, never hangs.

The bug these guard against: Redis crashed under load, the drain's claim failed and the drain began to
shut down, but its reaper loop had swallowed the cancellation (the Redis client turned it into a
connection error, which the loop's error handling caught), so the drain waited on it forever: no
claims, no reaping, every queued task stuck while the process looked alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from taskq.settings import Settings
from taskq.store import Store
from taskq.worker.drain import drain
from taskq.worker.loops import pause, reraise_cancellation, stop_tasks
from tests.support.clients import sync_client
from tests.support.env import IN_CI
from tests.support.orgs import new_org
from tests.support.redis_server import RedisServer
from tests.support.settings import make_settings
from tests.support.tasks import admit_tasks, counters, request, status_of
from tests.support.upstream import Upstream
from tests.support.waits import stuck_work, wait_for


async def _redis_call_that_hides_cancellation() -> None:
    """What the Redis client did: a cancellation arriving while it handles a broken connection comes
    out as a connection error."""
    try:
        await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        raise RedisConnectionError("Connection closed by server.") from None
    raise RedisConnectionError("Error 111 connecting")


async def _upkeep_loop(*, guarded: bool) -> None:
    while True:
        try:
            await _redis_call_that_hides_cancellation()
        except Exception:  # every await of the loop is in here, as in the reaper's loop
            if guarded:
                reraise_cancellation()


def test_a_loop_ends_when_cancelled_even_if_the_cancellation_surfaced_as_a_redis_error() -> None:
    async def main() -> tuple[int, int]:
        guarded = [asyncio.create_task(_upkeep_loop(guarded=True)) for _ in range(5)]
        unguarded = [asyncio.create_task(_upkeep_loop(guarded=False))]
        await asyncio.sleep(0.2)
        stuck_guarded = await stop_tasks(guarded, timeout=2)
        start = time.monotonic()
        stuck_unguarded = await stop_tasks(unguarded, timeout=0.3)
        assert time.monotonic() - start < 10, "stop_tasks waited far past its timeout"
        for task in stuck_unguarded:  # the loop the helper exists for: it ignored its cancel
            task.get_coro().close()
        return len(stuck_guarded), len(stuck_unguarded)

    assert asyncio.run(main()) == (0, 1)


def test_a_loop_ends_when_cancelled_even_if_a_call_swallowed_the_cancellation() -> None:
    """redis.asyncio can drop a CancelledError outright (no exception at all) while the request stays
    recorded on the task; loops that run until cancelled pause with ``pause``, which raises it."""

    async def swallowing_call() -> None:  # what the Redis client sometimes does with a cancellation
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)

    async def loop(wait: Callable[[float], Awaitable[None]]) -> None:
        while True:
            await swallowing_call()
            await wait(10)

    async def main() -> tuple[int, int]:
        paused = asyncio.create_task(loop(pause))
        slept = asyncio.create_task(loop(asyncio.sleep))
        await asyncio.sleep(0.05)
        stuck_paused = await stop_tasks([paused], timeout=2)
        stuck_slept = await stop_tasks([slept], timeout=0.3)
        for task in stuck_slept:  # the loop the helper exists for: it went on after its cancel
            task.get_coro().close()
        return len(stuck_paused), len(stuck_slept)

    assert asyncio.run(main()) == (0, 1)


@pytest.mark.redis
@pytest.mark.timeout(120)
def test_a_drain_keeps_running_through_a_redis_crash_and_finishes_everything(tmp_path: Path) -> None:
    try:
        server = RedisServer(tmp_path / "redis").start()
    except AssertionError:
        if IN_CI:
            raise
        pytest.skip("no redis-server binary to start a private Redis; mandatory in CI")
    client = sync_client(server.url)
    store = Store(client)
    org = new_org(store, credits=10**6, queue_limit=10**6).id

    def pending() -> int:
        c = counters(store, org)
        return c["queued"] + c["inflight"]

    async def main(settings: Settings) -> tuple[bool, bool, float]:
        stop = asyncio.Event()
        job = asyncio.create_task(drain(settings, concurrency=100, seconds=90, stop=stop))
        await asyncio.to_thread(wait_for, lambda: counters(store, org)["queued"] < 2500, 30, "a start")
        await asyncio.to_thread(server.crash, signal.SIGKILL)
        await asyncio.sleep(2.0)
        alive_while_down = not job.done()
        await asyncio.to_thread(server.start)
        left = await asyncio.to_thread(
            wait_for, lambda: pending() == 0, 60, "every task to finish", 0.05,
            lambda: stuck_work(client, store.org(org).shard, org),
        )  # fmt: skip
        alive_after = not job.done()
        stop.set()
        await asyncio.wait_for(job, 30)  # and it still stops when asked
        return alive_while_down, alive_after, left

    try:
        ids = admit_tasks(store, make_settings(), org, [request(prompt=f"q{i}") for i in range(3000)])
        with Upstream(latency=0.05) as upstream:
            settings = make_settings("worker", upstream=upstream.url, redis_url=server.url, lease_seconds=2.0)
            alive_while_down, alive_after, left = asyncio.run(main(settings))
        assert alive_while_down, "the drain ended while Redis was down"
        assert alive_after, "the drain ended instead of riding out the outage"
        assert counters(store, org)["reserved"] == 0
        assert {status_of(store, org, task_id) for task_id in ids} == {"COMPLETED"}
    finally:
        server.stop()
    print(f"\nall 3000 tasks finished {left:.1f} s after Redis came back")
