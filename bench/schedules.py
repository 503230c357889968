"""Delayed tasks and schedules: how late a delayed task starts, and what schedule loops cost Redis.

Run: python bench/schedules.py   (needs redis-server; about 40 s; prints figures, asserts nothing)

Rows, each beside its anchor measured in the same run:
  delay    a drain process idle on an idle stack; tasks admitted with delaySeconds 5, one at a time:
           claim time - admission time (both stamped in Redis scripts), against the same for tasks
           admitted without a delay (the idle enqueue -> claim latency)
  idle     Redis commands in 5 s while 2 schedule loops wait for 100 schedules due in an hour,
           against the same 5 s with no loop running
  firing   Redis commands per firing (every loop's share of it, the winner's claim, admission and
           record included) with 2 loops and an everySeconds 1 schedule
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from typing import Any

import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.support import machine, private_redis, table, wait_for
from bench.worker import DRAIN, Bench, simulator, spawn_out

from taskq import keys, schedules
from taskq.admission import admit
from taskq.schemas.tasks import TaskRequest, TaskType
from taskq.settings import Settings
from taskq.worker.clients import redis_client
from taskq.worker.schedules import run_schedules

TASK = {"taskType": "CHATGPT", "payload": {"prompt": "scheduled", "country": "US"}}


def lag_ms(b: Bench, org: str, delay_ms: int | None) -> int:
    """Admit one task, wait until a worker claims it; its claim time less its admission time."""
    from bench.worker import _payload

    item = TaskRequest(TaskType.CHATGPT, _payload(0), 1, None, None, delay_ms=delay_ms)
    [outcome] = admit(b.store, b.settings, b.store.org(org), [item])
    key = b.store.org(org).shard.task(outcome.task["id"])  # type: ignore[union-attr]
    wait_for(lambda: b.client.hget(key, "started"), 30)
    created, started = b.client.hmget(key, ["created", "started"])
    return int(started or 0) - int(created or 0)


def row_delay(b: Bench, sim: str, samples: int) -> list[list[Any]]:
    org = b.new_org()
    proc = spawn_out(["-c", DRAIN, "100"], b.drain_env(sim, TASKQ_WORKER_IDLE_WAIT_SECONDS="1"))
    try:
        wait_for(lambda: b.client.hlen(keys.WORKERS), 60)  # the drain is up (its first heartbeat)
        time.sleep(1.0)
        now_lags = [lag_ms(b, org, None) for _ in range(samples)]
        time.sleep(1.2)
        delayed = []
        for _ in range(samples):
            delayed.append(lag_ms(b, org, 5000))
            time.sleep(0.3)  # the drain goes back to idle in between
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    late = [d - 5000 for d in delayed]
    figures = (
        f"claimed {min(delayed) / 1000:.3f}-{max(delayed) / 1000:.3f} s after admission "
        f"(median {statistics.median(delayed) / 1000:.3f}): {min(late)}-{max(late)} ms after due, "
        f"{samples} tasks"
    )
    anchor = f"undelayed: {min(now_lags)}-{max(now_lags)} ms, median {statistics.median(now_lags):.0f} ms"
    return [["delaySeconds 5 on an idle stack", figures, anchor, "5.000-5.100 s"]]


def commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


async def with_loops(settings: Settings, n: int, seconds: float, client: redis.Redis) -> int:
    """Commands Redis processed during `seconds` while n schedule loops ran (after they settled)."""
    stop = asyncio.Event()
    clients = [redis_client(settings) for _ in range(n)]
    loops = [asyncio.create_task(run_schedules(c, settings, stop)) for c in clients]
    await asyncio.sleep(1.0)
    before = commands(client)
    await asyncio.sleep(seconds)
    used = commands(client) - before
    stop.set()
    await asyncio.gather(*loops)
    for c in clients:
        await c.aclose()
    return used


def row_idle(b: Bench, seconds: float = 5.0) -> list[list[Any]]:
    org = b.store.org(b.new_org())
    for i in range(100):
        schedules.create(
            b.store, b.settings, org, {"name": f"hourly {i}", "everySeconds": 3600, "tasks": [TASK]}
        )
    anchor = asyncio.run(with_loops(b.settings, 0, seconds, b.client))
    idle = asyncio.run(with_loops(b.settings, 2, seconds, b.client))
    return [
        [
            f"idle: 2 loops, 100 schedules, {seconds:g} s",
            f"{idle} Redis commands",
            f"no loop: {anchor}",
            "equal",
        ]
    ]


def row_firing(b: Bench, seconds: float = 6.0) -> list[list[Any]]:
    org_id = b.new_org()
    org = b.store.org(org_id)
    made = schedules.create(
        b.store, b.settings, org, {"name": "every second", "everySeconds": 1, "tasks": [TASK]}
    )
    used = asyncio.run(with_loops(b.settings, 2, seconds, b.client))
    runs = b.client.llen(org.shard.sched_runs(made["id"]))
    fired = b.client.llen(org.shard.org_tasks(org_id))
    per = used / max(1, fired)
    figures = f"{per:.1f} commands per firing (both loops, Lua's included)"
    return [
        [
            f"firing: 2 loops, everySeconds 1, {seconds:g} s",
            figures,
            f"{fired} firings, {runs} runs recorded",
            "",
        ]
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    with private_redis() as url, simulator("0") as sim:
        b = Bench(url)
        rows = row_delay(b, sim, args.samples) + row_idle(b) + row_firing(b)
    print(
        table(f"taskq delayed tasks and schedules ({machine()})", ["row", "taskq", "anchor", "target"], rows)
    )


if __name__ == "__main__":
    main()
