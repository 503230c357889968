"""`kill -TTIN`: a drain logs what each of its asyncio tasks is waiting on (as Sidekiq's TTIN does)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections import Counter
from typing import Any

log = logging.getLogger("taskq.worker")

#: The signal that asks every drain for the dump (`taskq worker` forwards it to its drains).
DUMP_SIGNAL = signal.SIGTTIN


def dump_tasks() -> None:
    """Log every asyncio task of this loop with where it is suspended (the TTIN signal handler)."""
    tasks = asyncio.all_tasks()
    where: Counter[str] = Counter()
    for task in tasks:
        where[" > ".join(_awaiting(task.get_coro())) or repr(task)] += 1
    report = "\n".join(f"{count:5d} x {stack}" for stack, count in where.most_common())
    log.warning("drain %d: %d asyncio tasks, by where they wait:\n%s", os.getpid(), len(tasks), report)


def _awaiting(coro: Any) -> list[str]:
    """file:line function of each coroutine in the chain this one awaits, outermost first."""
    chain = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            name = frame.f_code.co_filename.rsplit("/", 2)
            chain.append(f"{'/'.join(name[-2:])}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain
