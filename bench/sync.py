"""Benchmark: synchronous monitor calls through the queue, on `taskq serve` with its defaults.

Row 1, idle stack: one call at a time; its p50 beside the same provider's p50 called directly (the
anchor, same simulator, same run); the difference is what the queue adds (admission, claim, ack,
reply, HTTP). Row 2: N concurrent calls against 1 s of
simulated provider latency: p50, p99 and errors, beside the same N calls sent to the provider
directly (the floor that the machine, the simulator and the load generator leave). Both rows give
the intake's CPU per call (gunicorn's processes, user + system), which carries across the machine's
load better than latency does; the burst also gives the drain's, Redis's, the simulator's and the
load generator's (the last two are all the floor runs on), and where its
median call was when admitted, claimed and done (its task record), so what the p50 adds past the
provider shows on which side of it it is. One drain process (K=1000) runs the calls; a private Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from worker import DRAIN, SIM_PIDS, simulator, spawn_out  # noqa: E402

from support import free_port, machine, percentile, private_redis, spawn, table, wait_for  # noqa: E402
from taskq.keys import Shard  # noqa: E402
from taskq.store import Store  # noqa: E402

BODY = {"prompt": "Which vector databases support hybrid search?", "country": "US"}
LOCATION = {"type": "approximate", "country": "US"}
DIRECT = {
    "model": "gpt-5-mini",
    "input": BODY["prompt"],
    "tools": [{"type": "web_search", "user_location": LOCATION}],
}


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children (the gunicorn workers)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(tree_cpu(int(child)) for child in f.read().split())
    except OSError:
        pass
    return total


class Stack:
    """`taskq serve` (defaults) and one drain against a private Redis and a simulator."""

    def __init__(self, url: str, sim: str, serve_args: list[str]) -> None:
        self.port = free_port()
        env = {
            "TASKQ_REDIS_URL": url,
            "TASKQ_UPSTREAM_BASE_URL": sim,
            "TASKQ_OPENAI_API_KEY": "sk-bench",
            "TASKQ_WORKER_IDLE_WAIT_SECONDS": "0.5",
            "TASKQ_LOG_LEVEL": "WARNING",
        }
        self.intake = spawn(["-m", "taskq", "serve", "--port", str(self.port), *serve_args], env)
        self.drain = spawn_out(["-c", DRAIN, "1000"], env)
        self.base = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: httpx.get(self.base + "/healthz").status_code == 200, 30)
        _, self.key = Store(redis.Redis.from_url(url, decode_responses=True)).create_org(
            "bench", credits=10**9, concurrency=10_000, queue_limit=10**6
        )
        self.headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}

    def close(self) -> None:
        for proc in (self.intake, self.drain):
            proc.terminate()
            proc.wait(30)


async def timed_calls(
    url: str, headers: dict[str, str], body: Any, n: int, concurrent: int
) -> tuple[list[float], int]:
    """n POSTs, `concurrent` at a time, each on a connection of its own as n separate clients would
    send them: each call's seconds and the number that did not answer 200.

    The request's bytes are made once and each answer is read by its Content-Length on raw streams,
    on uvloop where it is installed: the generator shares the machine with what it measures, so its
    own CPU per call is kept to a fraction of an HTTP client library's (`floor` measures it)."""
    target = urlsplit(url)
    host, port = target.hostname or "127.0.0.1", target.port or 80
    data = json.dumps(body).encode()
    head = [f"POST {target.path} HTTP/1.1", f"Host: {target.netloc}", f"Content-Length: {len(data)}",
            "Connection: close", *(f"{name}: {value}" for name, value in headers.items())]  # fmt: skip
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + data
    latencies: list[float] = []
    errors = 0
    gate = asyncio.Semaphore(concurrent)

    async def one() -> None:
        nonlocal errors
        async with gate:
            t0 = time.perf_counter()
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status = await reader.readline()
            length = -1
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await (reader.readexactly(length) if length >= 0 else reader.read())
            latencies.append(time.perf_counter() - t0)
            errors += status.split(b" ", 2)[1:2] != [b"200"]
            writer.close()

    await asyncio.gather(*(one() for _ in range(n)))
    return latencies, errors


def run(calls: Coroutine[Any, Any, tuple[list[float], int]]) -> tuple[list[float], int]:
    """The calls on uvloop where it is installed (as the intake and the worker run), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(calls)
    return uvloop.run(calls)


def idle_overhead(url: str, sim: str, serve_args: list[str], n: int) -> dict[str, float]:
    """Row 1: sequential sync calls vs sequential direct provider calls (ms, p50)."""
    stack = Stack(url, sim, serve_args)
    try:
        monitor = stack.base + "/v1/monitor/chatgpt"
        direct_headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
        run(timed_calls(monitor, stack.headers, BODY, 20, 1))  # warm-up: imports, scripts, pools
        run(timed_calls(sim + "/v1/responses", direct_headers, DIRECT, 20, 1))
        cpu0 = tree_cpu(stack.intake.pid)
        ours, errors = run(timed_calls(monitor, stack.headers, BODY, n, 1))
        cpu = (tree_cpu(stack.intake.pid) - cpu0) / n * 1000
        anchor, _ = run(timed_calls(sim + "/v1/responses", direct_headers, DIRECT, n, 1))
    finally:
        stack.close()
    p50, base = percentile(ours, 50) * 1000, percentile(anchor, 50) * 1000
    return {"p50": p50, "anchor": base, "overhead": p50 - base, "errors": errors, "cpu": cpu}


def burst(url: str, sim: str, serve_args: list[str], n: int) -> dict[str, float]:
    """Row 2: n calls at once against 1 s latency (s)."""
    stack = Stack(url, sim, serve_args)
    try:
        monitor = stack.base + "/v1/monitor/chatgpt"
        run(timed_calls(monitor, stack.headers, BODY, 50, 50))  # warm-up
        server = int(redis.Redis.from_url(url).info("server")["process_id"])
        pids = {"intake": stack.intake.pid, "drain": stack.drain.pid, "sim": SIM_PIDS[sim], "redis": server}
        cpu0 = {name: tree_cpu(pid) for name, pid in pids.items()}
        load0 = time.process_time()
        since_ms, started = time.time() * 1000, time.perf_counter()
        latencies, errors = run(timed_calls(monitor, stack.headers, BODY, n, n))
        wall = time.perf_counter() - started
        cpu = {name: (tree_cpu(pid) - cpu0[name]) / n * 1000 for name, pid in pids.items()}
        cpu["load"] = (time.process_time() - load0) / n * 1000
    finally:
        stack.close()
    direct_headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    floor, _ = run(timed_calls(sim + "/v1/responses", direct_headers, DIRECT, n, n))
    return {
        "floor": percentile(floor, 50),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "errors": errors,
        "wall": wall,
        "cpu": cpu["intake"],
        "drain_cpu": cpu["drain"],
        "sim_cpu": cpu["sim"],
        "redis_cpu": cpu["redis"],
        "load_cpu": cpu["load"],
        **milestones(url, since_ms),
    }


def milestones(url: str, since_ms: float) -> dict[str, float]:
    """Where the median call of the burst was, in seconds after it started, by its task record:
    admitted (created), claimed (started) and done (finished, the worker's clock at its ack). What
    the p50 adds past "done" is the answer's way back: ack, inbox, charge, HTTP."""
    client = redis.Redis.from_url(url, decode_responses=True)
    fields = ("created", "started", "finished")
    rows = []
    for key in client.scan_iter(match=Shard(0).task("*"), count=1000):  # the benchmark's one shard
        values = client.hmget(key, fields)
        if all(values) and float(values[0]) >= since_ms:
            rows.append([(float(v) - since_ms) / 1000 for v in values])
    if not rows:
        return {"admitted": float("nan"), "claimed": float("nan"), "done": float("nan")}
    return {
        name: statistics.median(row[i] for row in rows)
        for i, name in enumerate(("admitted", "claimed", "done"))
    }


def measure(
    rounds: int = 3, calls: int = 100, concurrent: int = 500, serve_args: list[str] | None = None
) -> dict[str, list[float]]:
    names = (
        "p50",
        "anchor",
        "overhead",
        "idle_errors",
        "burst_p50",
        "burst_p99",
        "burst_errors",
        "burst_wall",
        "idle_cpu",
        "burst_cpu",
        "burst_floor",
        "burst_drain_cpu",
        "burst_sim_cpu",
        "burst_redis_cpu",
        "burst_load_cpu",
        "burst_admitted",
        "burst_claimed",
        "burst_done",
    )
    rows: dict[str, list[float]] = {name: [] for name in names}
    args = serve_args or []
    with private_redis() as url, simulator("0.1") as fast, simulator("1") as slow:
        for _ in range(rounds):
            idle = idle_overhead(url, fast, args, calls)
            rows["p50"].append(idle["p50"])
            rows["anchor"].append(idle["anchor"])
            rows["overhead"].append(idle["overhead"])
            rows["idle_errors"].append(idle["errors"])
            rows["idle_cpu"].append(idle["cpu"])
            many = burst(url, slow, args, concurrent)
            rows["burst_p50"].append(many["p50"])
            rows["burst_p99"].append(many["p99"])
            rows["burst_errors"].append(many["errors"])
            rows["burst_wall"].append(many["wall"])
            rows["burst_cpu"].append(many["cpu"])
            rows["burst_floor"].append(many["floor"])
            for name in ("drain_cpu", "sim_cpu", "redis_cpu", "load_cpu", "admitted", "claimed", "done"):
                rows[f"burst_{name}"].append(many[name])
    return rows


def spread(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=500)
    parser.add_argument("--serve-args", default="", help="extra `taskq serve` arguments (default: none)")
    args = parser.parse_args()
    rows = measure(args.rounds, args.calls, args.concurrent, args.serve_args.split())
    print(f"machine: {machine()}; median (min-max) of {args.rounds} rounds")
    print(table("synchronous monitor calls through the queue (`taskq serve` defaults, one drain K=1000)",
                ["figure", "taskq", "anchor (same run)", "target"], [
        ["idle: p50 per call, 0.1 s provider (ms)", spread(rows["p50"], "{:.1f}"),
         "provider called directly: " + spread(rows["anchor"], "{:.1f}"), ""],
        ["  overhead over the provider (ms)", spread(rows["overhead"], "{:.1f}"), "", "<= 20 ms"],
        ["  intake CPU per call (ms)", spread(rows["idle_cpu"], "{:.2f}"), "", ""],
        [f"{args.concurrent} concurrent calls, 1 s provider: p50 (s)", spread(rows["burst_p50"], "{:.2f}"),
         "the provider called directly, as many at once: " + spread(rows["burst_floor"], "{:.2f}"),
         "<= 1.2 s"],
        ["  p99 (s) / all answered (s)", spread(rows["burst_p99"], "{:.2f}") + " / " +
         spread(rows["burst_wall"], "{:.2f}"), "", ""],
        ["  intake CPU per call (ms)", spread(rows["burst_cpu"], "{:.2f}"),
         "drain: " + spread(rows["burst_drain_cpu"], "{:.2f}") + ", Redis: " +
         spread(rows["burst_redis_cpu"], "{:.2f}"), ""],
        ["  the floor's processes, CPU per call (ms)", "", "simulator: " +
         spread(rows["burst_sim_cpu"], "{:.2f}") + ", load generator: " +
         spread(rows["burst_load_cpu"], "{:.2f}"), ""],
        ["  median call admitted / claimed / done (s)", " / ".join(spread(rows[f"burst_{name}"], "{:.2f}")
         for name in ("admitted", "claimed", "done")), "", ""],
        ["  errors (non-200)", spread(rows["burst_errors"] + rows["idle_errors"], "{:.0f}"), "", "0"],
    ]))  # fmt: skip


if __name__ == "__main__":
    main()
