"""Worker benchmark: a drain process vs an RQ SimpleWorker, claim latency, kill -9 recovery, HTTP pools.

Run: python bench/worker.py   (needs redis-server; ~2-3 minutes; prints figures, asserts nothing)
     python bench/worker.py --rows a,b   (only some rows; --repeat N runs each drain row N times)

Every drain runs in its own process against the provider simulator (another process), so its CPU
time and peak RSS are its own. Rows:
  (a) latency 1 s, K=1,000: throughput vs ideal (K / latency), CPU ms per task, peak RSS
      vs RQ SimpleWorker running the same CHATGPT adapter call, one job at a time
  (b) latency 0: full pipeline (claim, HTTP call, ack, signed webhook delivered to a receiver in
      another process) vs RQ SimpleWorker running a no-op job, both measured in this run
  (c) idle worker: admission -> claim latency p50/p99
  (d) kill -9 with 1,000 calls in flight: time until all requeued and until all finished
  (e) httpx's own pool vs the aiohttp transport at K=1,000: CPU ms per call
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any

import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.support import (
    free_port,
    machine,
    percentile,
    private_redis,
    span_rate,
    spawn,
    steady_rate,
    table,
    wait_for,
)

from taskq.admission import admit
from taskq.schemas.payloads import ChatGPTPayload
from taskq.schemas.tasks import TaskRequest, TaskType
from taskq.settings import Settings
from taskq.store import Store

DRAIN = """
import asyncio, json, resource, sys, time
from taskq.settings import load_settings
from taskq.worker.drain import drain
try:
    from taskq.worker.eventloop import run_loop
except ImportError:  # an older taskq tree (A/B runs with PYTHONPATH)
    run_loop = asyncio.run
settings = load_settings()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
stats = run_loop(drain(settings, concurrency=int(sys.argv[1]), seconds=600))
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024  # ru_maxrss: the parent's
print(json.dumps({"cpu": cpu, "rss_mb": peak, "stats": stats}), flush=True)
"""

RQ_WORKER = """
import json, resource, sys, time
from redis import Redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
conn = Redis.from_url(sys.argv[1])
queue = Queue("bench", connection=conn, serializer=JSONSerializer)
worker = SimpleWorker([queue], connection=conn, serializer=JSONSerializer)
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
worker.work(burst=True, logging_level="WARNING")
r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024  # ru_maxrss: the parent's
print(json.dumps({"cpu": cpu, "wall": wall, "rss_mb": peak}), flush=True)
"""


def adapter_job(base_url: str) -> str:
    """RQ job: the same CHATGPT adapter call a drain makes, one per job."""
    import asyncio

    import httpx

    from taskq.providers import ADAPTERS, ProviderConfig

    async def call() -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            config = ProviderConfig(base_url, "sk-bench", "gpt-5-mini", 60)
            return await ADAPTERS["CHATGPT"](_payload(0), client, config)

    return str(asyncio.run(call())["text"])[:20]


def noop_job() -> int:
    return 0


def _payload(i: int) -> ChatGPTPayload:
    return ChatGPTPayload.model_validate({"prompt": f"bench {i}", "country": "US"})


class Bench:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.redis_pid = int(self.client.info("server")["process_id"])
        self.store = Store(self.client)
        self.settings = Settings(openai_api_key="sk-bench", redis_url=url)
        self.hook = ""  # webhook url the admitted tasks carry ("" = none)

    def new_org(self) -> str:
        return self.store.create_org("bench", credits=10**9, concurrency=100_000, queue_limit=10**6)[0]

    def admit(self, org: str, n: int) -> list[str]:
        ids: list[str] = []
        for start in range(0, n, 500):
            batch = [
                TaskRequest(TaskType.CHATGPT, _payload(i), 1, None, self.hook or None)
                for i in range(start, min(n, start + 500))
            ]
            ids += [o.task["id"] for o in admit(self.store, self.settings, self.store.org(org), list(batch))]  # type: ignore[union-attr]
        return ids

    def remaining(self, org: str) -> int:
        queued, inflight = self.client.hmget(self.store.org(org).shard.org(org), ["queued", "inflight"])
        return int(queued or 0) + int(inflight or 0)

    def webhooks_pending(self, org: str) -> int:
        shard = self.store.org(org).shard
        return int(self.client.zcard(shard.wh_due)) + int(self.client.zcard(shard.wh_proc))

    def drain_env(self, sim: str, **extra: str) -> dict[str, str]:
        return {
            "TASKQ_REDIS_URL": self.url,
            "TASKQ_UPSTREAM_BASE_URL": sim,
            "TASKQ_OPENAI_API_KEY": "sk-bench",
            "TASKQ_WORKER_IDLE_WAIT_SECONDS": "0.5",
            **extra,
        }

    def drain_run(self, sim: str, n: int, k: int, limit: float = 60, **env: str) -> dict[str, Any]:
        """Start a drain, admit n tasks, time them until done, stop it; return wall, CPU and RSS."""
        org = self.new_org()
        proc = spawn_out(["-c", DRAIN, str(k)], self.drain_env(sim, **env))
        time.sleep(2.0)  # imports and first idle wait
        others = {
            "sim": SIM_PIDS.get(sim, 0),
            "redis": self.redis_pid,
            "drain": proc.pid,
            "receiver": RECEIVER_PIDS.get(self.hook, 0),
        }
        cpu0 = {name: proc_cpu(pid) for name, pid in others.items()}
        t0 = time.monotonic()
        ids = self.admit(org, n)
        # Done = finished and, with a webhook url, its webhook delivered (or given up on).
        while (self.remaining(org) or self.webhooks_pending(org)) and time.monotonic() - t0 < limit:
            time.sleep(0.02)
        wall = time.monotonic() - t0
        done = n - self.remaining(org) - self.webhooks_pending(org)
        cpu = {f"{name}_cpu": proc_cpu(pid) - cpu0[name] for name, pid in others.items()}
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        report = json.loads(out.decode().strip().splitlines()[-1])
        # With n = 10 x K the window starts after the first wave (the ramp: admission, 1,000 connects).
        finished = self.finish_times(org, ids)
        return {
            "wall": wall,
            "done": done,
            "steady": steady_rate(finished),
            "span": span_rate(finished),
            **cpu,
            **report,
        }

    def finish_times(self, org: str, ids: list[str]) -> list[int]:
        """The finish times (ms) of the tasks that finished."""
        pipe = self.client.pipeline()
        for task_id in ids:
            pipe.hget(self.store.org(org).shard.task(task_id), "finished")
        return [int(f) for f in pipe.execute() if f]

    def rq_run(self, jobs: list[tuple[str, list[Any]]]) -> dict[str, Any]:
        from rq import Queue
        from rq.serializers import JSONSerializer

        queue = Queue("bench", connection=redis.Redis.from_url(self.url), serializer=JSONSerializer)
        queue.enqueue_many([Queue.prepare_data(func, args=args, result_ttl=0) for func, args in jobs])
        proc = spawn_out(["-c", RQ_WORKER, self.url], {})
        out, _ = proc.communicate(timeout=120)
        return dict(json.loads(out.decode().strip().splitlines()[-1]))


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn_out(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), root]))
    return subprocess.Popen(
        [sys.executable, *args],
        # An outer PYTHONPATH goes first: PYTHONPATH=/other/src runs another taskq tree (A/B runs).
        env={**os.environ, **env, "PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


SIM_PIDS: dict[str, int] = {}  # simulator URL -> its process id, to measure its CPU
RECEIVER_PIDS: dict[str, int] = {}  # webhook receiver URL -> its process id


@contextmanager
def receiver() -> Any:
    """A webhook receiver (204 to every POST) in another process; yields its url."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "webhooks.py")
    proc = subprocess.Popen(
        [sys.executable, script, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        url = f"http://127.0.0.1:{int(proc.stdout.readline())}/hook"
        RECEIVER_PIDS[url] = proc.pid
        yield url
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


@contextmanager
def simulator(latency: str) -> Any:
    port = free_port()
    code = f"from taskq.simulator.app import serve; serve('127.0.0.1', {port}, '{latency}', 0.0)"
    proc = spawn(["-c", code])
    url = f"http://127.0.0.1:{port}"
    SIM_PIDS[url] = proc.pid
    import httpx

    wait_for(lambda: httpx.get(url + "/healthz").status_code == 200)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def per_task(run: dict[str, Any], n: int) -> str:
    return f"{run['cpu'] * 1000 / max(1, n):.2f}"


def split_row(label: str, run: dict[str, Any]) -> list[Any]:
    """Where the machine's CPU went during a drain run (2 vCPUs shared by all three processes)."""
    n, wall = max(1, run["done"]), max(0.001, run["wall"])
    names = [name for name in ("drain", "sim", "redis", "receiver") if run[f"{name}_cpu"] > 0]
    parts = ", ".join(f"{name} {run[f'{name}_cpu'] * 1000 / n:.2f}" for name in names)
    busy = sum(run[f"{name}_cpu"] for name in names) / wall
    return [f"{label}   CPU split, ms/task", f"{parts}; {busy:.2f} of 2 cores busy", "", ""]


def row_a(b: Bench, sim: str, k: int = 1000, n: int = 10_000) -> list[list[Any]]:
    ours = b.drain_run(sim, n, k)
    ideal = k / 1.0
    rq = b.rq_run([("bench.worker.adapter_job", [sim])] * 5)
    return [
        [
            "(a) drain K=1000, latency 1 s",
            f"{ours['steady']:,.0f}/s steady = {ours['steady'] / ideal:.2f} of ideal "
            f"{ideal:,.0f}/s (10-90 % span {ours['span']:,.0f}/s); "
            f"end to end {ours['done'] / ours['wall']:,.0f}/s",
            per_task(ours, ours["done"]),
            f"{ours['rss_mb']:.0f}",
        ],
        split_row("(a)", ours),
        [
            "(a) RQ SimpleWorker, same adapter call",
            f"{5 / rq['wall']:.2f}/s (ideal 1/s)",
            per_task(rq, 5),
            f"{rq['rss_mb']:.0f}",
        ],
    ]


def row_b(b: Bench, sim: str, hook: str, n: int = 6000) -> list[list[Any]]:
    b.hook = hook
    try:
        ours = b.drain_run(sim, n, 200, TASKQ_WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8")
    finally:
        b.hook = ""
    rq = b.rq_run([("bench.worker.noop_job", [])] * 2000)
    ratio = (ours["done"] / ours["wall"]) / (2000 / rq["wall"])
    return [
        [
            "(b) drain K=200, latency 0 (claim+HTTP+ack+signed webhook)",
            f"{ours['done'] / ours['wall']:,.0f}/s = {ratio:.1f}x RQ (target >= 3x)",
            per_task(ours, ours["done"]),
            f"{ours['rss_mb']:.0f}",
        ],
        split_row("(b)", ours),
        [
            "(b) RQ SimpleWorker, no-op job",
            f"{2000 / rq['wall']:,.0f}/s",
            per_task(rq, 2000),
            f"{rq['rss_mb']:.0f}",
        ],
    ]


def row_c(b: Bench, sim: str, samples: int = 200) -> list[list[Any]]:
    org = b.new_org()
    proc = spawn_out(["-c", DRAIN, "100"], b.drain_env(sim))
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
    figures = f"p50 {percentile(lags, 50):.1f} ms, p99 {percentile(lags, 99):.1f} ms (target p99 <= 50)"
    return [
        ["(c) idle admission -> claim", figures, "", ""],
        ["(c) RQ (BLPOP on its list)", "same mechanism: a blocking pop, ms", "", ""],
    ]


def row_d(b: Bench, slow: str, fast: str, n: int = 1000) -> list[list[Any]]:
    org = b.new_org()
    ids = b.admit(org, n)
    victim = spawn_out(["-c", DRAIN, "1000"], b.drain_env(slow))
    wait_for(lambda: b.client.hget(b.store.org(org).shard.org(org), "inflight") == str(n), 30)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    killed = time.monotonic()
    rescuer = spawn_out(["-c", DRAIN, "1000"], b.drain_env(fast))
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
    credits = int(b.client.hget(shard.org(org), "credits") or 0)
    charged_once = credits == 10**9 - n * 5
    return [
        [
            "(d) kill -9, 1,000 in flight (lease 30 s, reaper 5 s)",
            f"requeued {t_requeue:.1f} s, finished {t_done:.1f} s; charged once: {charged_once}",
            "",
            "",
        ],
        [
            "(d) RQ: abandoned job noticed",
            "~90 s + up to 600 s maintenance (anchors §1.4; not re-run)",
            "",
            "",
        ],
    ]


def row_e(b: Bench, sim: str, aio: dict[str, Any] | None, n: int = 1000) -> list[list[Any]]:
    httpx_run = b.drain_run(sim, n, 1000, limit=60, TASKQ_WORKER_HTTP_TRANSPORT="httpx")
    aio = aio or b.drain_run(sim, n, 1000)
    return [
        [
            "(e) httpx own pool, K=1000",
            f"{httpx_run['done']}/{n} done in {httpx_run['wall']:.1f} s",
            per_task(httpx_run, httpx_run["done"]),
            f"{httpx_run['rss_mb']:.0f}",
        ],
        [
            "(e) httpx API + aiohttp transport, K=1000",
            f"{aio['done']}/{n} done in {aio['wall']:.1f} s",
            per_task(aio, aio["done"]),
            f"{aio['rss_mb']:.0f}",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="abcde", help="which rows to run, e.g. a or a,b (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="run rows (a) and (b) this many times")
    parser.add_argument(
        "--tasks-a", type=int, default=10_000, help="tasks in row (a): 10 waves keep the ramp out of 'steady'"
    )
    opts = parser.parse_args()
    want = set(opts.rows.replace(",", "").lower())
    print(f"taskq worker benchmark on {machine()}\n")
    rows: list[list[Any]] = []
    with private_redis() as url:
        bench = Bench(url)
        with simulator("1") as sim1:
            for _ in range(opts.repeat if "a" in want else 0):
                rows += row_a(bench, sim1, n=opts.tasks_a)
            if "e" in want:
                rows += row_e(bench, sim1, None)
        with simulator("0") as sim0, receiver() as hook:
            for _ in range(opts.repeat if "b" in want else 0):
                rows += row_b(bench, sim0, hook)
            if "c" in want:
                rows += row_c(bench, sim0)
            if "d" in want:
                with simulator("600") as slow:
                    rows += row_d(bench, slow, sim0)
    print(
        table(
            "worker figures (one process each)",
            ["row", "throughput / latency", "CPU ms/task", "peak RSS MB"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
