"""`kill -TTIN`: the dump names where each asyncio task of a drain waits."""

from __future__ import annotations

import asyncio
import logging

import pytest

from taskq.worker.debug import dump_tasks


async def _parked_on_an_event(event: asyncio.Event) -> None:
    await event.wait()


def test_the_dump_lists_each_waiting_task_by_where_it_waits(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        event = asyncio.Event()
        parked = [asyncio.create_task(_parked_on_an_event(event)) for _ in range(3)]
        await asyncio.sleep(0)  # let them reach their wait
        dump_tasks()
        event.set()
        await asyncio.gather(*parked)

    with caplog.at_level(logging.WARNING, logger="taskq.worker"):
        asyncio.run(main())
    [record] = [r for r in caplog.records if "asyncio tasks, by where they wait" in r.getMessage()]
    lines = record.getMessage().splitlines()
    assert any(line.strip().startswith("3 x") and "_parked_on_an_event" in line for line in lines), lines
