"""The drain's event loop: uvloop where it is installed, else asyncio's own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

R = TypeVar("R")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop (its I/O callbacks cost a fraction of asyncio's selector loop), or None: default."""
    try:
        import uvloop
    except ImportError:  # a platform without uvloop wheels: asyncio's loop does the same job, slower
        return None
    return uvloop.new_event_loop


def run_loop(main: Coroutine[Any, Any, R]) -> R:
    """``asyncio.run`` on the fastest loop available."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
