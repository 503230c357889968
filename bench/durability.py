"""Benchmark: the admission cost of each TASKQ_DURABILITY mode, side by side in one run.

500-task batches over HTTP through `taskq serve` (2 processes) at 1 and 4 clients, on one valkey-server
primary with AOF and one replica with AOF (the bundled valkey-server: WAITAOF needs 7.2+), for `none`
(the anchor), `local` (WAITAOF 1 0) and `replica` (WAITAOF 1 1). Modes take turns within each round.

    python bench/durability.py [--rounds 3] [--batches 20] [--appendfsync always|everysec] [--hz 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import admission  # noqa: E402

from support import free_port, machine, median_spread, percentile, spawn, table, wait_for  # noqa: E402
from taskq.embedded import config_args  # noqa: E402
from taskq.store import Store  # noqa: E402
from tests.support.sentinel import Node, SentinelGroup  # noqa: E402

MODES = ("none", "local", "replica")


def measure(
    rounds: int = 3, batches: int = 20, appendfsync: str = "everysec", hz: int = 10
) -> dict[str, Any]:
    """Per mode: 1-client and 4-client tasks/s and p50 per batch of each round, and ratios to none."""
    work = Path(tempfile.mkdtemp(prefix="taskq-bench-durable-"))
    extra = [*config_args(), "--hz", str(hz)]
    primary = Node(work / "primary", appendfsync=appendfsync).start(*extra)
    replica = Node(work / "replica", appendfsync=appendfsync).start(
        *extra, "--replicaof", "127.0.0.1", str(primary.port)
    )
    wait_for(lambda: SentinelGroup.linked(replica), 30)
    rows: dict[str, Any] = {mode: {"rate": [], "c_rate": [], "p50": []} for mode in MODES}
    servers = {}
    try:
        for mode in MODES:
            port = free_port()
            env = {
                "TASKQ_REDIS_URL": primary.url,
                "TASKQ_UPSTREAM_BASE_URL": "http://127.0.0.1:9",
                "TASKQ_DURABILITY": mode,
                **admission.KEYS,
            }
            argv = ["-m", "taskq", "serve", "--port", str(port), "--workers", "2"]
            servers[mode] = (spawn(argv, env), port)
        for _, port in servers.values():
            wait_for(lambda port=port: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, 30)  # type: ignore[misc]
        store = Store(primary.client())
        for round_no in range(rounds):
            order = MODES[round_no % 3 :] + MODES[: round_no % 3]
            for mode in order:
                _, key = store.create_org("bench", credits=10**12, concurrency=100, queue_limit=10**9)
                base = f"http://127.0.0.1:{servers[mode][1]}"
                lat, c_rate = admission.bench_taskq(base, key, batches, round_no * 10 + MODES.index(mode), 4)
                rows[mode]["rate"].append(admission.BATCH * len(lat) / (sum(lat) / 1000))
                rows[mode]["c_rate"].append(c_rate)
                rows[mode]["p50"].append(percentile(lat, 50))
                primary.client().flushdb()  # keep the AOF (and the rounds) the same size
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
        replica.stop()
        primary.stop()
    for mode in MODES:
        for figure in ("rate", "c_rate"):
            rows[mode][figure + "_ratio"] = [
                ours / anchor for ours, anchor in zip(rows[mode][figure], rows["none"][figure], strict=True)
            ]
    return rows


def report(rows: dict[str, Any], title: str) -> str:
    lines = []
    for mode in MODES:
        r = rows[mode]
        lines.append(
            [
                mode,
                median_spread(r["rate"]),
                median_spread(r["rate_ratio"]),
                median_spread(r["p50"]),
                median_spread(r["c_rate"]),
                median_spread(r["c_rate_ratio"]),
            ]
        )
    header = ["TASKQ_DURABILITY", "tasks/s, 1 client", "x none", "p50 ms/batch", "tasks/s, 4 clients"]
    header.append("x none")
    return table(title, header, lines)


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--appendfsync", default="everysec", choices=["always", "everysec"])
    parser.add_argument("--hz", type=int, default=10)
    args = parser.parse_args()
    started = time.monotonic()
    rows = measure(args.rounds, args.batches, args.appendfsync, args.hz)
    print(f"machine: {machine()}; {args.rounds} rounds of {args.batches} batches x 500; median (min-max)")
    title = f"admission by TASKQ_DURABILITY (valkey, appendfsync {args.appendfsync}, hz {args.hz}, 1 replica)"
    print(report(rows, title))
    print(f"took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
