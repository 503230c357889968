"""Benchmark: 500-task batches over HTTP through `taskq serve` vs RQ enqueue_many, in the same run."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import httpx
import redis
from rq import Queue
from rq.serializers import JSONSerializer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import free_port, machine, median_spread, percentile, private_redis, spawn, table, wait_for
from taskq.store import Store

BATCH = 500
KEYS = {
    f"TASKQ_{k}": "bench"
    for k in ("OPENAI_API_KEY", "GEMINI_API_KEY", "PERPLEXITY_API_KEY", "XAI_API_KEY", "SERPAPI_API_KEY")
}
TYPES = [("CHATGPT", "prompt"), ("GEMINI", "prompt"), ("PERPLEXITY", "prompt"), ("GOOGLE", "query")]


def noop(*_args: object) -> None:
    """The RQ job enqueued by the anchor (never run)."""


def make_batch(round_no: int, batch_no: int) -> list[dict[str, object]]:
    tasks = []
    for i in range(BATCH):
        task_type, field = TYPES[i % len(TYPES)]
        task: dict[str, object] = {
            "taskType": task_type,
            "payload": {field: f"Which vector databases support hybrid search? variant {i}", "country": "US"},
            "priority": 1 + (i % 10),
        }
        if i % 5 == 0:
            task["idempotencyKey"] = f"r{round_no}-b{batch_no}-{i}"
        tasks.append(task)
    return tasks


def bench_taskq(
    base: str, api_key: str, batches: int, round_no: int, clients: int
) -> tuple[list[float], float]:
    """Per-batch latencies (one client) and tasks/s (several clients)."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def encoded(seed: int, batch: int) -> bytes:  # clients send bytes they have: not timed
        return json.dumps(make_batch(seed, batch)).encode()

    bodies = [encoded(round_no, b) for b in range(batches)]
    latencies = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        client.post("/v1/async/task/batch", content=encoded(round_no, -1))  # warm-up
        for body in bodies:
            t0 = time.perf_counter()
            r = client.post("/v1/async/task/batch", content=body)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200 and r.json()["summary"]["succeeded"] == BATCH, r.text[:300]

    per_client = [[encoded(round_no + 1000 * (c + 1), b) for b in range(batches)] for c in range(clients)]

    def run(work: list[bytes]) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            for body in work:
                assert client.post("/v1/async/task/batch", content=body).status_code == 200

    threads = [threading.Thread(target=run, args=(w,)) for w in per_client]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = clients * batches * BATCH / (time.perf_counter() - t0)
    return latencies, rate


def bench_rq(url: str, batches: int) -> tuple[list[float], float]:
    conn = redis.Redis.from_url(url)
    queue = Queue("bench", connection=conn, serializer=JSONSerializer)
    latencies = []
    for b in range(batches):
        jobs = [Queue.prepare_data("bench.admission.noop", args=(f"payload {b}-{i}",)) for i in range(BATCH)]
        t0 = time.perf_counter()
        queue.enqueue_many(jobs)
        latencies.append((time.perf_counter() - t0) * 1000)
    conn.flushdb()
    return latencies, BATCH * batches / (sum(latencies) / 1000)


def measure(
    rounds: int = 3, batches: int = 40, clients: int = 4, http_workers: int = 2
) -> dict[str, list[float]]:
    """Run `rounds` rounds of taskq over HTTP and RQ enqueue_many on one private Redis; figures per round."""
    rows: dict[str, list[float]] = {
        k: [] for k in ("p50", "p99", "rate", "rq_p50", "rq_rate", "ratio", "c_rate")
    }
    with private_redis() as url:
        port = free_port()
        env = {"TASKQ_REDIS_URL": url, "TASKQ_UPSTREAM_BASE_URL": "http://127.0.0.1:9", **KEYS}
        server = spawn(["-m", "taskq", "serve", "--port", str(port), "--workers", str(http_workers)], env)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: httpx.get(base + "/healthz").status_code == 200)
            store = Store(redis.Redis.from_url(url, decode_responses=True))
            for round_no in range(rounds):
                _, key = store.create_org("bench", credits=10**12, concurrency=100, queue_limit=10**9)
                lat, c_rate = bench_taskq(base, key, batches, round_no, clients)
                rq_lat, rq_rate = bench_rq(url, batches)
                rows["p50"].append(percentile(lat, 50))
                rows["p99"].append(percentile(lat, 99))
                rate = BATCH * len(lat) / (sum(lat) / 1000)  # like RQ's: all tasks over all batch times
                rows["rate"].append(rate)
                rows["c_rate"].append(c_rate)
                rows["rq_p50"].append(percentile(rq_lat, 50))
                rows["rq_rate"].append(rq_rate)
                # one client against RQ's one enqueue_many caller: the same shape of work
                rows["ratio"].append(rate / rq_rate)
        finally:
            server.terminate()
            server.wait(10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--http-workers", type=int, default=2)
    args = parser.parse_args()
    rows = measure(args.rounds, args.batches, args.clients, args.http_workers)
    print(
        f"machine: {machine()}; {args.rounds} rounds of {args.batches} batches x {BATCH} tasks; "
        f"median (min-max)"
    )
    print(
        table(
            "HTTP admission of 500-task batches vs RQ enqueue_many (same Redis, same run)",
            ["figure", "taskq (HTTP, validated, atomic)", "RQ enqueue_many", "target"],
            [
                ["p50 per batch, ms", median_spread(rows["p50"]), median_spread(rows["rq_p50"]), "≤ 15 ms"],
                ["p99 per batch, ms", median_spread(rows["p99"]), "", ""],
                ["tasks/s, 1 client", median_spread(rows["rate"]), median_spread(rows["rq_rate"]), ""],
                [
                    f"tasks/s, {args.clients} clients",
                    median_spread(rows["c_rate"]),
                    median_spread(rows["rq_rate"]),
                    "",
                ],
                ["ratio taskq/RQ (1 client each)", median_spread(rows["ratio"]), "1.0", "≥ 3x"],
            ],
        )
    )


if __name__ == "__main__":
    main()
