"""`make bench`: every headline figure in ONE table, each measured in this run next to its anchor.

Each row is the median of TASKQ_BENCH_ROUNDS runs (default 3; recovery after kill -9: 2) with the
min-max spread. The figures come from the other scripts' measuring functions: admission.py,
worker.py (its Bench), webhooks.py, redis_ops.py, sync.py, durability.py and flow_control.py (one
round: each of its three runs takes the ideal 40 s of an 800-task run at a 20 req/s limit). Then
peers.py runs one taskq worker beside one BullMQ and one arq worker on the same job
(TASKQ_BENCH_PEERS=0 skips it). About 15 minutes on 2 cores.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import admission  # noqa: E402
import durability  # noqa: E402
import flow_control  # noqa: E402
import redis_ops  # noqa: E402
import sync  # noqa: E402
from bench import worker  # noqa: E402

import webhooks  # noqa: E402
from support import machine, percentile, private_redis, table, wait_for  # noqa: E402
from taskq.schemas.tasks import TaskRequest, TaskType  # noqa: E402

ROUNDS = int(os.environ.get("TASKQ_BENCH_ROUNDS", "3"))


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


class HookBench(worker.Bench):
    """worker.Bench whose tasks carry a webhook url, so the drain also signs and delivers webhooks."""

    hook = ""

    def admit(self, org: str, n: int) -> list[str]:
        from taskq.admission import admit

        ids: list[str] = []
        for start in range(0, n, 500):
            batch: list[Any] = [
                TaskRequest(TaskType.CHATGPT, worker._payload(i), 1, None, self.hook or None)
                for i in range(start, min(n, start + 500))
            ]
            ids += [o.task["id"] for o in admit(self.store, self.settings, self.store.org(org), batch)]  # type: ignore[union-attr]
        return ids

    def webhooks_pending(self, org: str) -> int:
        shard = self.store.org(org).shard
        return int(self.client.zcard(shard.wh_due)) + int(self.client.zcard(shard.wh_proc))


@contextmanager
def receiver() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "webhooks.py"), "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}/hook"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


def pipeline_run(b: HookBench, sim: str, n: int, k: int) -> dict[str, Any]:
    """Row (b): n tasks through claim, HTTP call, ack and a delivered signed webhook, in one drain process."""
    org = b.new_org()
    env = b.drain_env(sim, TASKQ_WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8")
    proc = worker.spawn_out(["-c", worker.DRAIN, str(k)], env)
    time.sleep(2.0)
    cpu0 = worker.proc_cpu(proc.pid)
    t0 = time.monotonic()
    b.admit(org, n)
    while (b.remaining(org) or b.webhooks_pending(org)) and time.monotonic() - t0 < 120:
        time.sleep(0.02)
    wall = time.monotonic() - t0
    cpu = worker.proc_cpu(proc.pid) - cpu0
    delivered = n - b.webhooks_pending(org) - b.remaining(org)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    return {"rate": delivered / wall, "cpu_ms": cpu * 1000 / max(1, delivered), "delivered": delivered}


def idle_claim(b: HookBench, sim: str, samples: int = 100) -> float:
    """Row (c): p99 ms from admission to claim with an idle drain waiting on the wake list."""
    b.hook = ""
    org = b.new_org()
    proc = worker.spawn_out(["-c", worker.DRAIN, "100"], b.drain_env(sim))
    time.sleep(2.5)
    lags = []
    for _ in range(samples):
        sent = time.time() * 1000
        [task_id] = b.admit(org, 1)
        key = b.store.org(org).shard.task(task_id)
        wait_for(lambda key=key: b.client.hget(key, "started"), 5)  # type: ignore[misc]
        lags.append(int(b.client.hget(key, "started") or 0) - sent)
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    return percentile(lags, 99)


def rq_idle_claim(url: str, samples: int = 100) -> float:
    """The anchor of row (c): enqueue -> started_at of an idle RQ SimpleWorker (BLPOP), p99 ms."""
    from rq import Queue
    from rq.job import Job
    from rq.serializers import JSONSerializer

    conn = redis.Redis.from_url(url)
    queue = Queue("idle", connection=conn, serializer=JSONSerializer)
    code = worker.RQ_WORKER.replace('"bench"', '"idle"').replace("burst=True", "burst=False")
    proc = worker.spawn_out(["-c", code, url], {})
    time.sleep(2.0)
    lags = []
    for _ in range(samples):
        sent = time.time()
        job = queue.enqueue("bench.worker.noop_job")
        wait_for(lambda job=job: Job.fetch(job.id, connection=conn, serializer=JSONSerializer).started_at, 5)  # type: ignore[misc]
        started = Job.fetch(job.id, connection=conn, serializer=JSONSerializer).started_at
        assert started is not None
        lags.append((started.timestamp() - sent) * 1000)
        time.sleep(0.02)
    proc.kill()
    proc.communicate(timeout=30)
    return percentile(lags, 99)


def recovery(b: HookBench, slow: str, fast: str, n: int = 1000) -> dict[str, float]:
    """Row (d): kill -9 a drain holding n calls (lease 30 s, reaper 5 s); seconds to requeue and to finish."""
    b.hook = ""
    org = b.new_org()
    ids = b.admit(org, n)
    victim = worker.spawn_out(["-c", worker.DRAIN, str(n)], b.drain_env(slow))
    wait_for(lambda: b.client.hget(b.store.org(org).shard.org(org), "inflight") == str(n), 60)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    killed = time.monotonic()
    rescuer = worker.spawn_out(["-c", worker.DRAIN, str(n)], b.drain_env(fast))
    shard = b.store.org(org).shard

    def requeued() -> bool:
        pipe = b.client.pipeline()
        for task_id in ids:
            pipe.hget(shard.task(task_id), "attempts")
        return all(int(a or 0) >= 2 for a in pipe.execute())

    wait_for(requeued, 90)
    t_requeue = time.monotonic() - killed
    wait_for(lambda: b.remaining(org) == 0, 60)
    t_done = time.monotonic() - killed
    rescuer.send_signal(signal.SIGTERM)
    rescuer.communicate(timeout=30)
    charged_once = int(b.client.hget(shard.org(org), "credits") or 0) == 10**9 - n * 5
    assert charged_once, "credits after the kill are not exactly one charge per task"
    return {"requeue": t_requeue, "done": t_done}


def repeat(rounds: int, run: Callable[[], Any]) -> list[Any]:
    return [run() for _ in range(rounds)]


def main() -> None:
    started = time.monotonic()
    print(f"machine: {machine()}; redis-server private per script; median (min-max) of {ROUNDS} runs\n")
    adm = admission.measure(rounds=ROUNDS, batches=40, clients=4)
    dur = durability.measure(rounds=ROUNDS, batches=20)
    with private_redis() as url:
        b = HookBench(url)
        with worker.simulator("1") as sim1:
            adapter_jobs = [("bench.worker.adapter_job", [sim1])] * 5
            a_runs = repeat(ROUNDS, lambda: (b.drain_run(sim1, 4000, 1000), b.rq_run(adapter_jobs)))
        with worker.simulator("0") as sim0, receiver() as hook:
            b.hook = hook
            b_runs = repeat(
                ROUNDS,
                lambda: (pipeline_run(b, sim0, 6000, 200), b.rq_run([("bench.worker.noop_job", [])] * 2000)),
            )
            c_runs = repeat(ROUNDS, lambda: (idle_claim(b, sim0), rq_idle_claim(url)))
            with worker.simulator("600") as slow:
                d_runs = repeat(max(2, ROUNDS - 1), lambda: recovery(b, slow, sim0))
    wh = repeat(ROUNDS, lambda: webhooks.measure(10_000, 300))
    ops = repeat(ROUNDS, lambda: redis_ops.measure(2000))
    ops_one = repeat(ROUNDS, lambda: redis_ops.measure(500, batch=1))
    calls = sync.measure(rounds=ROUNDS, calls=100, concurrent=500)
    flow_rows = flow_control.bench_rows()  # one round: each run takes the limit's ideal 40 s

    ours_a = [run["steady"] for run, _ in a_runs]
    rq_a = [5 / rq["wall"] for _, rq in a_runs]
    cpu_a = [r["cpu"] * 1e3 / max(1, r["done"]) for r, _ in a_runs]
    ours_b = [run["rate"] for run, _ in b_runs]
    rq_b = [2000 / rq["wall"] for _, rq in b_runs]
    rows = [
        ["HTTP admission, 500-task batches, 1 client (tasks/s)", spread(adm["rate"]),
         "RQ enqueue_many: " + spread(adm["rq_rate"]), spread(adm["ratio"], "{:.1f}x"), ">= 3x"],
        ["  4 clients, 2 intake processes (tasks/s)", spread(adm["c_rate"]), "", "", ""],
        ["  p50 per 500-task batch (ms)", spread(adm["p50"], "{:.1f}"),
         "RQ enqueue_many: " + spread(adm["rq_p50"], "{:.1f}"), "", "<= 15 ms"],
        *[[f"  TASKQ_DURABILITY={mode} (valkey AOF everysec + 1 replica), {n} (tasks/s)",
           spread(dur[mode][rate]), "none: " + spread(dur["none"][rate]), spread(dur[mode][rate + "_ratio"],
           "{:.2f}x"), ">= 0.7x at 4 clients" if mode == "local" and n == "4 clients" else ""]
          for mode in ("local", "replica") for n, rate in (("1 client", "rate"), ("4 clients", "c_rate"))],
        ["(a) calls in flight per process, 1 s latency, K=1000", spread(ours_a),
         "RQ SimpleWorker: " + spread(rq_a, "{:.2f}"),
         spread([o / r for o, r in zip(ours_a, rq_a, strict=True)], "{:,.0f}x"), ">= 800 (0.8 of ideal)"],
        ["  CPU ms per task at K=1000", spread(cpu_a, "{:.2f}"),
         "RQ: " + spread([rq["cpu"] * 1000 / 5 for _, rq in a_runs], "{:.1f}"), "", ""],
        ["(b) full pipeline per process, latency 0, signed webhooks (tasks/s)", spread(ours_b),
         "RQ SimpleWorker no-op: " + spread(rq_b),
         spread([o / r for o, r in zip(ours_b, rq_b, strict=True)], "{:.1f}x"), ""],
        ["  CPU ms per task incl. webhook", spread([r["cpu_ms"] for r, _ in b_runs], "{:.2f}"), "", "", ""],
        ["(c) idle enqueue -> claim p99 (ms)", spread([c for c, _ in c_runs], "{:.1f}"),
         "RQ idle worker: " + spread([r for _, r in c_runs], "{:.1f}"), "", "<= 50 ms"],
        ["(d) kill -9, 1,000 in flight: all requeued (s)", spread([d["requeue"] for d in d_runs], "{:.1f}"),
         "RQ: not re-run (abandoned job noticed after >= 90 s)", "", "<= 35 s"],
        ["  ... all finished after the kill (s), charged once", spread([d["done"] for d in d_runs], "{:.1f}"),
         "", "", ""],
        ["worker RSS (MB): taskq at 1,000 in flight vs RQ at 1", spread([r["rss_mb"] for r, _ in a_runs]),
         "RQ SimpleWorker: " + spread([rq["rss_mb"] for _, rq in a_runs]), "", ""],
        ["webhook deliveries per process (per s)", spread([w["rate"] for w in wh]), "", "",
         f">= {webhooks.TARGET_PER_S:,}"],
        ["Redis commands per task, admit to webhook, Lua included (500/request)",
         spread([o["taskq"] for o in ops], "{:.1f}"),
         "RQ per job (enqueue_many+SimpleWorker): " + spread([o["rq"] for o in ops], "{:.1f}"),
         spread([o["rq"] / o["taskq"] for o in ops], "{:.1f}x"), "<= 15"],
        ["  of which sent by clients (round trips)", spread([o["taskq_sent"] for o in ops], "{:.1f}"),
         "RQ: " + spread([o["rq_sent"] for o in ops], "{:.1f}"), "", ""],
        ["  tasks submitted one per request", spread([o["taskq"] for o in ops_one], "{:.1f}"),
         "RQ, one job per enqueue: " + spread([o["rq"] for o in ops_one], "{:.1f}"),
         spread([o["rq"] / o["taskq"] for o in ops_one], "{:.1f}x"), ""],
        ["  Redis CPU per finished task (us)", spread([o["taskq_cpu_us"] for o in ops], "{:.0f}"),
         "RQ: " + spread([o["rq_cpu_us"] for o in ops], "{:.0f}"),
         spread([o["rq_cpu_us"] / o["taskq_cpu_us"] for o in ops], "{:.1f}x"), ""],
        ["sync call p50, idle stack, 0.1 s provider (ms)", spread(calls["p50"], "{:.1f}"),
         "provider called directly: " + spread(calls["anchor"], "{:.1f}"), "", ""],
        ["  overhead over the provider (ms)", spread(calls["overhead"], "{:.1f}"), "", "", "<= 20 ms"],
        ["500 concurrent sync calls, 1 s provider, `taskq serve` defaults: p50 (s)",
         spread(calls["burst_p50"], "{:.2f}"), "provider latency: 1.00",
         spread([p / 1.0 for p in calls["burst_p50"]], "{:.2f}x"), "<= 1.2 s, 0 errors"],
        ["  p99 (s); errors", spread(calls["burst_p99"], "{:.2f}") + "; " +
         spread(calls["burst_errors"] + calls["idle_errors"], "{:.0f}"), "", "", ""],
        *flow_rows,
    ]  # fmt: skip
    print(table("taskq proof benchmarks", ["figure", "taskq", "anchor (same run)", "ratio", "target"], rows))
    print(f"\ntaskq commands per task, most frequent: {ops[-1]['taskq_top']}")
    print(f"RQ commands per job, most frequent: {ops[-1]['rq_top']}")
    if os.environ.get("TASKQ_BENCH_PEERS", "1") != "0":  # TASKQ_BENCH_PEERS=0 skips BullMQ and arq
        import peers

        print("\n" + peers.report())
    print(f"bench took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
