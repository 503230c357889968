"""Where Redis's time goes per job in `bench/peers.py`: every command of each worker's window, by name,
with taskq's script calls by script.

Runs `bench/peers.py`'s workloads against a Redis of its own that logs every command in its SLOWLOG
(`slowlog-log-slower-than 0`; Lua's inner commands are logged too, so a script's time includes theirs),
and reads the log at the edges of each window (the points where peers.py reads Redis's CPU). Logging
every command costs Redis time of its own: read the shares and the calls, and take Redis CPU per job
from `bench/peers.py` itself.

Run: python bench/redis_time.py [--rows zero,latency] [--peers bullmq] [--jobs 1.0] [--top 12]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections import defaultdict
from importlib import resources
from typing import Any

import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import peers
from bench.support import private_redis

from taskq.scripts import source


def script_names() -> dict[str, str]:
    """SHA1 -> script name, for every taskq script."""
    lua = resources.files("taskq").joinpath("lua")
    names = [
        p.name[:-4] for p in lua.iterdir() if p.name.endswith(".lua") and not p.name.endswith("_lib.lua")
    ]
    return {hashlib.sha1(source(name).encode()).hexdigest(): name for name in names}


def summary(entries: list[dict[str, Any]], names: dict[str, str]) -> dict[str, list[int]]:
    """Command (EVALSHA: "script <name>") -> [calls, microseconds]."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for entry in entries:
        command = entry["command"]
        text = command.decode("utf-8", "replace") if isinstance(command, bytes) else str(command)
        name, _, rest = text.partition(" ")
        name = name.lower()
        if name == "evalsha":
            sha = rest.split(" ", 1)[0]
            name = f"script {names.get(sha, sha[:8])}"
        out[name][0] += 1
        out[name][1] += int(entry["duration"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="zero,latency")
    parser.add_argument("--peers", default="bullmq")
    parser.add_argument("--jobs", type=float, default=1.0)
    parser.add_argument("--top", type=int, default=12, help="commands shown per window")
    opts = parser.parse_args()
    names = script_names()
    logs: list[list[dict[str, Any]]] = []
    read_cpu = peers.redis_cpu

    def marked(client: redis.Redis) -> float:  # the edges of every window peers.py measures
        cpu = read_cpu(client)
        logs.append(client.slowlog_get(-1))
        client.slowlog_reset()
        return cpu

    with private_redis() as url:
        client = redis.Redis.from_url(url)
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", 2_000_000)
        os.environ["TASKQ_BENCH_REDIS_URL"] = url
        peers.redis_cpu = marked
        print(peers.report(opts.rows, 1, opts.peers, opts.jobs))
    workers = ["taskq", *[p for p in opts.peers.split(",") if p]]
    windows = [(row, w) for row in opts.rows.split(",") for w in workers]
    for index, (row, worker) in enumerate(windows):
        # Four reads per worker: before and after filling its queue, then before and after its run.
        if 4 * index + 3 >= len(logs):
            break
        n = int((6000 if row == "zero" else 10_000) * opts.jobs)
        stats = summary(logs[4 * index + 3], names)
        total = sum(us for _, us in stats.values())
        print(
            f"\n{row} row, {worker}: {total / n:.1f} us of logged time per job (a script's includes the "
            "commands it ran, listed too)"
        )
        for name, (calls, us) in sorted(stats.items(), key=lambda kv: -kv[1][1])[: opts.top]:
            print(f"  {name:24s} {calls / n:7.3f} calls/job  {us / n:6.1f} us/job  {us / calls:7.1f} us/call")


if __name__ == "__main__":
    main()
