"""Cluster benchmark: admission and claim throughput on a local 3-master Redis Cluster, 1 shard vs 3.

Run: python bench/cluster.py   (needs redis-server and redis-cli; ~1 minute; prints figures, asserts nothing)
     python bench/cluster.py --clients 4 --seconds 5 --batch 100

Each client is a process with its own RedisCluster client. Admission: each client calls the admit
script (arguments packed beforehand, so the figure is the Lua call, not pydantic) with batches of
--batch tasks, round-robin over its organizations: one per shard, so with 3 shards the work spreads
over the three masters. Claim: the same clients then lease the backlog through the claim script
(k = 16, as the drain does), each starting at a different shard and rotating like the drain.
With 1 shard every key lives in one slot, so one master does all the work whatever the cluster size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.support import machine, table

from taskq.connection import connect
from taskq.keys import Shard
from taskq.scheduler import claim
from taskq.store import Store, now_ms
from tests.support.cluster import place_shards, redis_cluster
from tests.support.scheduler import Scheduler

CLAIM_K = 16
PAYLOAD = json.dumps({"prompt": "Which vector databases support hybrid search?", "country": "US"})


def make_orgs(url: str, shards: int, clients: int) -> list[list[str]]:
    """Per client, one organization in each shard (org ids are random: create until each shard has one)."""
    store = Store(connect(url), shards)
    per_client: list[list[str]] = []
    for _ in range(clients):
        found: dict[int, str] = {}
        while len(found) < shards:
            org = store.create_org("bench", credits=10**12, concurrency=10**9, queue_limit=10**9)[0]
            found.setdefault(store.org(org).shard.index, org)
        per_client.append([found[i] for i in range(shards)])
    return per_client


def packed_batch(prefix: str, first: int, size: int) -> str:
    """admit.lua's task rows (see its header) with fresh ids: prefix-number."""
    rows = [[f"{prefix}-{first + i}", "CHATGPT", 1 + i % 10, 5, "", "", PAYLOAD, "", i] for i in range(size)]
    return json.dumps(rows)


def admit_client(url: str, shards: int, orgs: list[str], size: int, seconds: float, start: Any) -> int:
    """Admit batches until the time is up; return tasks admitted."""
    store = Store(connect(url), shards)
    script = store.scripts["admit"]
    prefix = uuid.uuid4().hex[:12]
    start.wait()
    admitted, i, deadline = 0, 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        org = orgs[i % len(orgs)]
        shard = store.org(org).shard
        i += 1
        keys = [shard.org(org), shard.seq, shard.rr, shard.turn, shard.capped, shard.wake]
        rows = packed_batch(prefix, admitted, size)
        result = script(keys=keys, args=[shard.tag, org, now_ms(), rows, "", size, "", 3600])
        assert result[0] == "ok", result[:2]
        admitted += size
    return admitted


def claim_client(url: str, shards: int, first: int, seconds: float, start: Any) -> int:
    """Claim k at a time, rotating the starting shard like the drain, until empty or time is up."""
    scheduler = Scheduler(connect(url))
    caps: dict[str, int | None] = {"CHATGPT": None}
    start.wait()
    claimed, rounds, deadline = 0, first, time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = 0
        for index in range(shards):
            shard = Shard((rounds + index) % shards)
            got += len(scheduler.run(claim(shard, caps, now=now_ms(), lease_ms=600_000, k=CLAIM_K)))
        rounds += 1
        claimed += got
        if got == 0:
            break
    return claimed


def measure(url: str, shards: int, clients: int, seconds: float, size: int) -> dict[str, tuple[float, float]]:
    """Per phase: (tasks/s with `clients` processes, busiest master's Redis CPU microseconds per task)."""
    flush(url)
    orgs = make_orgs(url, shards, clients)
    ctx = mp.get_context("fork")
    figures: dict[str, tuple[float, float]] = {}
    with ctx.Manager() as manager, ctx.Pool(clients) as pool:
        for phase in ("admit", "claim"):
            start = manager.Barrier(clients + 1)
            if phase == "admit":
                args = [(admit_client, (url, shards, o, size, seconds, start)) for o in orgs]
            else:
                args = [(claim_client, (url, shards, c, seconds, start)) for c in range(clients)]
            jobs = [pool.apply_async(fn, a) for fn, a in args]
            before = redis_cpu(url)
            start.wait()
            t0 = time.monotonic()
            tasks = sum(job.get() for job in jobs)
            elapsed = time.monotonic() - t0
            busiest = max(after - before[node] for node, after in redis_cpu(url).items())
            figures[phase] = (tasks / elapsed, busiest * 1e6 / max(tasks, 1))
    return figures


def redis_cpu(url: str) -> dict[str, float]:
    """CPU seconds used so far by each master (user + sys)."""
    client = connect(url)
    used = {}
    for node in client.get_primaries():
        info = client.get_redis_connection(node).info("cpu")
        used[node.name] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    client.close()
    return used


def flush(url: str) -> None:
    client = connect(url)
    for node in client.get_primaries():
        client.get_redis_connection(node).flushall()
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=3, help="client processes")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--batch", type=int, default=100, help="tasks per admit call")
    args = parser.parse_args()
    with redis_cluster(3) as url:
        runs = [measure(url, 1, args.clients, args.seconds, args.batch)]
        runs.append(measure(url, 3, args.clients, args.seconds, args.batch))
        flush(url)
        place_shards(url, 3)
        runs.append(measure(url, 3, args.clients, args.seconds, args.batch))
    names = {
        "admit": f"admission (admit.lua, {args.batch}-task batches)",
        "claim": f"claim (claim.lua, k={CLAIM_K})",
    }
    rows = []
    for phase, name in names.items():
        (rate1, cpu1), *threes = (run[phase] for run in runs)
        rows.append(
            [f"{name}: tasks/s", f"{rate1:,.0f}", *(f"{r:,.0f} ({r / rate1:.2f}x)" for r, _ in threes)]
        )
        rows.append(["  busiest master: CPU us/task", f"{cpu1:.1f}", *(f"{c:.1f}" for _, c in threes)])
        ceilings = [f"{1e6 / c:,.0f} ({cpu1 / c:.2f}x)" for _, c in threes]
        rows.append(["  Redis-bound ceiling, tasks/s", f"{1e6 / cpu1:,.0f}", *ceilings])
    print(
        f"machine: {machine()}; 3-master cluster on loopback (same machine as the clients); "
        f"{args.clients} client processes, {args.seconds:g} s per phase"
    )
    header = ["figure", "1 shard", "3 shards, default slots", "3 shards, one per master"]
    print(table("1 shard vs 3 shards (ratio to 1 shard)", header, rows))
    print("default slots: redis-cli's even slot ranges put shards 0 and 1 on the same master.")
    print("ceiling = 1 s / the busiest master's CPU per task: where that master saturates its core.")


if __name__ == "__main__":
    main()
