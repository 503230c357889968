"""Helpers for the worker's asyncio loops, which run until cancelled: pausing, stopping, racing."""

from __future__ import annotations

import asyncio
from typing import Any


def reraise_cancellation() -> None:
    """Call from a loop's ``except Exception``: raise CancelledError if this task was asked to stop.

    A cancellation that lands while the Redis client is tearing down a broken connection can come
    out as another exception, which the loop's error handling would swallow; the loop then never
    ends and whoever awaits it hangs. The request is still recorded on the task (``cancelling()``).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def pause(seconds: float) -> None:
    """``asyncio.sleep`` for a loop that runs until it is cancelled.

    redis.asyncio can swallow a CancelledError outright (seen with redis 8.1: about one cancellation
    in twenty that lands during a command), leaving the request recorded on the task; the loop would
    then go on forever and whoever awaits it (``asyncio.run`` at exit included) would hang. So the
    request is checked before every pause.
    """
    reraise_cancellation()
    await asyncio.sleep(seconds)


async def first_done(*aws: Any) -> None:
    """Wait until the first of these awaitables is done; cancel the others."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def stop_tasks(tasks: list[asyncio.Task[Any]], timeout: float) -> list[asyncio.Task[Any]]:
    """Cancel these tasks and wait up to `timeout` for them to end; return those that did not.

    Never waits longer than `timeout`, so a task that ignores its cancellation cannot hang the caller.
    """
    for task in tasks:
        task.cancel()
    if not tasks:
        return []
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in done:
        if not task.cancelled():
            task.exception()  # retrieved: errors were logged where they happened
    return list(pending)
