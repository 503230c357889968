"""A drain run in the test process until a condition holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from taskq.settings import Settings
from taskq.store import Store
from taskq.worker.drain import drain
from tests.support.tasks import counters


def run_drain(
    settings: Settings,
    until: Callable[[], bool],
    *,
    concurrency: int = 50,
    timeout: float = 20,
    stuck: Callable[[], str] | None = None,
) -> Any:
    """Run one drain in this process until `until()` holds, then stop it gracefully; return its stats.

    With stuck given, a drain that ends before `until()` holds fails the test with stuck()'s account.
    """

    async def main() -> dict[str, int]:
        stop = asyncio.Event()
        job = asyncio.create_task(drain(settings, concurrency=concurrency, seconds=timeout, stop=stop))
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not until() and loop.time() < end and not job.done():
            await asyncio.sleep(0.05)
        stop.set()
        if stuck is not None and not until():
            detail = stuck()
            stats = await job
            raise AssertionError(
                f"the drain ended after {timeout:g} s before it was done ({stats}): {detail}"
            )
        return await job

    return asyncio.run(main())


def settled(store: Store, org: str) -> Callable[[], bool]:
    """True once the org has nothing queued and nothing in flight."""

    def check() -> bool:
        c = counters(store, org)
        return c["queued"] == 0 and c["inflight"] == 0

    return check
