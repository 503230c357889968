"""Runs taskq.scheduler ops on a synchronous client, one round trip each: what the worker's
AsyncScheduler.run does on redis.asyncio, for tests and benchmarks that drive transitions by hand."""

from __future__ import annotations

from typing import Any, TypeVar

from taskq.scripts import Op, Scripts

R = TypeVar("R")


class Scheduler:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.scripts = Scripts(client)

    def run(self, op: Op[R]) -> R:
        return op.parse(self.scripts[op.script](keys=op.keys, args=op.args))
