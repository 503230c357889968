"""Peer benchmark: one taskq drain beside one BullMQ worker and one arq worker, same job, same Redis.

Run: python bench/peers.py [--rows zero,latency] [--repeat N]   (prints figures, asserts nothing)

Every worker does the same job: one POST of an OpenAI Responses body to the provider simulator, parse
the answer, store the text as the job's result (taskq also validates, charges credits, fences and
stores the normalized result, which its users get and the peers' do not). BullMQ and arq get a
prefilled queue of N jobs and one worker process drains it; taskq runs as an operator runs it,
`taskq worker --processes 1` (its process, the RQ worker and the forked drain, all measured), and
gets its N tasks admitted while the provider's lane is paused once the drain is up; the lane resumes
when its window opens. Figures start when the worker is ready (imports excluded) and the queue full:
  jobs/s           completions per second between the 10th and 90th percentile finishes: the slope
                   of a least-squares line through them (bench.support.steady_rate; the notes
                   give the older figure, count over the span between those two finishes)
  worker CPU/job   user + system CPU of the worker process over the run / N
  Redis CPU/job    Redis's own used_cpu_user + used_cpu_sys over the run / N
  enqueue Redis    Redis's CPU filling the queue / N, before the run (taskq: admission, with its
                   credits, idempotency and listing indexes; the peers: their producer's adds)
  cores busy       (notes) over the run: the worker, its Redis and the simulator ("run"), and
                   everything on the machine ("machine"); machine minus run is other work: a
                   run had a core to spare when the machine's figure stayed a core under the total
  RSS, PSS         the worker's peak resident set (taskq: its largest process) and its proportional
                   set (taskq: the sum over its three processes, at its peak during the run)
Rows: "zero" (simulator latency 0, 200 in flight) and "latency" (1 s, 1,000 in flight; the ideal
rate is 1,000/s).

The peers are installed by the benchmark itself, outside the package, in ~/.cache/taskq-bench-peers
(TASKQ_BENCH_PEERS_DIR): BullMQ with npm (skipped with a line saying so when Node is missing), arq
in a virtualenv of its own (its redis-py range differs from taskq's). Nothing of theirs is committed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.support import machine, machine_cpu, private_redis, span_rate, steady_rate, table
from bench.worker import SIM_PIDS, Bench, proc_cpu, simulator, spawn_out

from taskq import flow, keys

PEERS_DIR = Path(os.environ.get("TASKQ_BENCH_PEERS_DIR", Path.home() / ".cache" / "taskq-bench-peers"))
BULLMQ_VERSION = "6.7.6"
ARQ_VERSION = "0.28.0"

BULLMQ_JS = r"""
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';
import { readFileSync } from 'node:fs';
const [mode, redisUrl, arg1, arg2, arg3] = process.argv.slice(2);
const u = new URL(redisUrl);
const connection = new IORedis({ host: u.hostname, port: Number(u.port), maxRetriesPerRequest: null });
if (mode === 'produce') {
  const queue = new Queue('bench', { connection });
  const n = Number(arg1);
  for (let start = 0; start < n; start += 500) {
    const jobs = [];
    for (let i = start; i < Math.min(n, start + 500); i++) jobs.push({ name: 'call', data: { i } });
    await queue.addBulk(jobs);
  }
  await queue.close();
  await connection.quit();
  process.exit(0);
}
const sim = arg1, k = Number(arg2), n = Number(arg3);
const times = [];
let failed = 0;
const cpu0 = process.cpuUsage();
const worker = new Worker('bench', async (job) => {
  const r = await fetch(sim + '/v1/responses', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer sk-bench' },
    body: JSON.stringify({
      model: 'gpt-5-mini', input: 'bench ' + job.data.i, tools: [{ type: 'web_search' }],
    }),
  });
  if (!r.ok) throw new Error('upstream ' + r.status);
  const body = await r.json();
  for (const item of body.output) {
    if (item.type !== 'message') continue;
    for (const part of item.content) if (part.type === 'output_text') return part.text;
  }
  throw new Error('no text');
}, { connection, concurrency: k });
const finish = async () => {
  const cpu = process.cpuUsage(cpu0);
  await worker.close();
  const status = readFileSync('/proc/self/status', 'utf8');
  const rollup = readFileSync('/proc/self/smaps_rollup', 'utf8');
  const kb = (text, field) => Number(text.split(field + ':')[1].trim().split(/\s+/)[0]);
  const report = JSON.stringify({ cpu: (cpu.user + cpu.system) / 1e6, times, failed,
    rss_mb: kb(status, 'VmHWM') / 1024, pss_mb: kb(rollup, 'Pss') / 1024 });
  process.stdout.write(report + '\n', () => process.exit(0));  // a pipe is written asynchronously
};
const done = () => { if (times.length + failed === n) finish(); };
worker.on('completed', () => { times.push(Date.now()); done(); });
worker.on('failed', () => { failed++; done(); });
"""

ARQ_PY = r"""
import asyncio, json, resource, sys, time
import aiohttp
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker

mode, url = sys.argv[1], sys.argv[2]

async def call(ctx, i):
    body = {"model": "gpt-5-mini", "input": f"bench {i}", "tools": [{"type": "web_search"}]}
    async with ctx["session"].post(ctx["sim"] + "/v1/responses", json=body,
                                   headers={"authorization": "Bearer sk-bench"}) as r:
        r.raise_for_status()
        answer = await r.json()
    for item in answer["output"]:
        if item["type"] == "message":
            for part in item["content"]:
                if part["type"] == "output_text":
                    return part["text"]
    raise ValueError("no text")

async def produce(n):
    pool = await create_pool(RedisSettings.from_dsn(url))
    for start in range(0, n, 500):
        await asyncio.gather(*(pool.enqueue_job("call", i) for i in range(start, min(n, start + 500))))
    await pool.aclose()

async def work(sim, k, n):
    times, done = [], asyncio.Event()
    async def startup(ctx):
        ctx["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        ctx["sim"] = sim
    async def shutdown(ctx):
        await ctx["session"].close()
    async def ended(ctx):
        times.append(int(time.time() * 1000))
        if len(times) == n:
            done.set()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    worker = Worker(functions=[call], redis_settings=RedisSettings.from_dsn(url), max_jobs=k,
                    on_startup=startup, on_shutdown=shutdown, after_job_end=ended,
                    handle_signals=False, keep_result=3600)
    runner = asyncio.create_task(worker.async_run())
    await done.wait()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    failed = worker.jobs_failed
    await worker.close()
    runner.cancel()
    status = open("/proc/self/status").read()
    rollup = open("/proc/self/smaps_rollup").read()
    kb = lambda text, field: int(text.split(field + ":")[1].split()[0])
    print(json.dumps({"cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime), "times": times,
                      "failed": failed, "rss_mb": kb(status, "VmHWM") / 1024,
                      "pss_mb": kb(rollup, "Pss") / 1024}), flush=True)

if mode == "produce":
    asyncio.run(produce(int(sys.argv[3])))
else:
    asyncio.run(work(sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
"""


def install_bullmq() -> Path | None:
    """BullMQ in PEERS_DIR/bullmq with npm; None (and a line saying why) when Node is missing."""
    if not shutil.which("node") or not shutil.which("npm"):
        print("BullMQ: skipped, node and npm are not on PATH")
        return None
    folder = PEERS_DIR / "bullmq"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "node_modules" / "ioredis").exists():
        (folder / "package.json").write_text('{"private": true, "type": "module"}\n')
        npm = ["npm", "install", "--silent", "--no-audit", "--no-fund"]
        subprocess.run([*npm, f"bullmq@{BULLMQ_VERSION}", "ioredis@5"], cwd=folder, check=True)
    (folder / "bench.mjs").write_text(BULLMQ_JS)
    return folder


def install_arq() -> Path:
    """arq in a virtualenv of its own in PEERS_DIR/arq; returns its python."""
    folder = PEERS_DIR / "arq"
    python = folder / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    check = subprocess.run([str(python), "-c", "import arq, aiohttp"], capture_output=True)
    if check.returncode != 0:
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"arq=={ARQ_VERSION}", "aiohttp"], check=True)
    (folder / "bench_arq.py").write_text(ARQ_PY)
    return python


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return int(f.read().split("Pss:")[1].split()[0]) / 1024
    except OSError:
        return 0.0


def run_peer(
    produce: list[str], cmd: list[str], client: redis.Redis, n: int, timeout: float, sim: str
) -> dict[str, Any]:
    """Prefill the peer's queue (its Redis CPU: "enqueue"), then start its worker on it; the worker's
    JSON line once it has finished n jobs."""
    cpu0 = redis_cpu(client)
    subprocess.run(produce, check=True, timeout=300)
    enqueue = redis_cpu(client) - cpu0
    cpu0 = redis_cpu(client)
    window = Window(sim)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        why = f"{cmd[0]} did not finish {n} jobs in {timeout:.0f} s: {err.decode()[-800:]}"
        raise RuntimeError(why) from None
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err.decode()[-800:]}")
    report = dict(json.loads(out.decode().strip().splitlines()[-1]))
    report["redis_cpu"] = redis_cpu(client) - cpu0
    report["enqueue_redis_cpu"] = enqueue
    report["cores"] = window.cores(report["cpu"] + report["redis_cpu"])
    return report


class Window:
    """A run's wall time, the simulator's CPU and the whole machine's busy CPU, from now on."""

    def __init__(self, sim: str) -> None:
        self.sim_pid = SIM_PIDS.get(sim, 0)
        self.t0, self.sim0, self.machine0 = time.monotonic(), proc_cpu(self.sim_pid), machine_cpu()

    def cores(self, cpu: float) -> tuple[float, float]:
        """(cores the run used: `cpu` of the worker and Redis plus the simulator's; cores the whole
        machine used meanwhile), averaged over the window."""
        wall = max(0.001, time.monotonic() - self.t0)
        ours = cpu + proc_cpu(self.sim_pid) - self.sim0
        return ours / wall, (machine_cpu() - self.machine0) / wall


def tree(root: int) -> list[int]:
    """root and every process below it (Linux /proc children lists)."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(child) for child in f.read().split()]
        except OSError:
            continue
    return pids


def tree_cpu(root: int) -> float:
    return sum(proc_cpu(pid) for pid in tree(root))


def run_taskq(bench: Bench, sim: str, k: int, n: int, timeout: float) -> dict[str, Any]:
    """`taskq worker --processes 1` (its process, its RQ worker, the forked drain) on n CHATGPT tasks.

    The tree is measured whole: CPU and PSS of all three processes; the peers run one process each."""
    org = bench.new_org()
    env = {**bench.drain_env(sim), "TASKQ_LOG_LEVEL": "WARNING"}
    proc = spawn_out(["-m", "taskq", "worker", "--processes", "1", "--concurrency", str(k)], env)
    deadline = time.monotonic() + 60
    while not bench.client.hlen(keys.WORKERS):  # the drain's first heartbeat: the tree is up
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("taskq worker did not start")
        time.sleep(0.05)
    # Admitted while the provider's lane is paused, as the peers' queues are filled before their
    # windows open: Redis's admission work is counted apart ("enqueue"), then the lane resumes.
    flow.pause(bench.store, "CHATGPT", "bench: filling the queue")
    rcpu0 = redis_cpu(bench.client)
    ids = bench.admit(org, n)
    enqueue = redis_cpu(bench.client) - rcpu0
    cpu0, rcpu0 = tree_cpu(proc.pid), redis_cpu(bench.client)
    window = Window(sim)
    flow.resume(bench.store, "CHATGPT")
    bench.client.lpush(bench.store.org(org).shard.wake, "resumed")
    deadline = time.monotonic() + timeout
    pss = 0.0
    while bench.remaining(org) and time.monotonic() < deadline:
        time.sleep(0.05)
        pss = max(pss, sum(pss_mb(pid) for pid in tree(proc.pid)))
    cpu, rcpu = tree_cpu(proc.pid) - cpu0, redis_cpu(bench.client) - rcpu0
    cores = window.cores(cpu + rcpu)
    rss = max(rss_peak_mb(pid) for pid in tree(proc.pid))
    proc.send_signal(signal.SIGTERM)
    # rq's teardown can wait out its pubsub thread's 60 s read timeout; the figures are taken already.
    proc.communicate(timeout=120)
    shard = bench.store.org(org).shard
    pipe = bench.client.pipeline()
    for task_id in ids:
        pipe.hmget(shard.task(task_id), ["finished", "status"])
    rows = pipe.execute()
    times = [int(finished) for finished, status in rows if finished and status == "COMPLETED"]
    failed = sum(1 for _, status in rows if status == "FAILED")
    return {
        "cpu": cpu,
        "times": times,
        "failed": failed,
        "rss_mb": rss,
        "pss_mb": pss,
        "redis_cpu": rcpu,
        "enqueue_redis_cpu": enqueue,
        "cores": cores,
    }


def rss_peak_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(f.read().split("VmHWM:")[1].split()[0]) / 1024
    except OSError:
        return 0.0


def cells(name: str, run: dict[str, Any], n: int, anchor: dict[str, Any] | None) -> list[str]:
    rate, cpu, rcpu = steady_rate(run["times"]), run["cpu"] * 1000 / n, run["redis_cpu"] * 1000 / n
    enqueue = run["enqueue_redis_cpu"] * 1000 / n
    row = [name, f"{rate:,.0f}", f"{cpu:.2f}", f"{rcpu:.3f}", f"{enqueue:.3f}",
           f"{run['rss_mb']:.0f} / {run['pss_mb']:.0f}"]  # fmt: skip
    ours, machine_cores = run["cores"]
    done = f"{len(run['times'])}/{n} done, 10-90 % span {span_rate(run['times']):,.0f}/s, cores busy: "
    done += f"run {ours:.2f}, machine {machine_cores:.2f} of {os.cpu_count()}"
    if anchor is None:
        return [*row, done]
    a_rate, a_cpu = steady_rate(anchor["times"]), anchor["cpu"] * 1000 / n
    a_rcpu = anchor["redis_cpu"] * 1000 / n
    ratios = f"taskq/{name}: jobs/s {a_rate / max(rate, 0.001):.2f}x, CPU {a_cpu / max(cpu, 1e-9):.2f}x, "
    ratios += f"Redis {a_rcpu / max(rcpu, 1e-9):.2f}x"
    return [*row, f"{done}; {ratios}"]


def workload(url: str, latency: str, k: int, n: int, peers: dict[str, Any]) -> list[list[str]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    bench = Bench(url)
    rows: list[list[str]] = []
    timeout = 60 + 3 * n / k * max(1.0, float(latency))
    with simulator(latency) as sim:
        ours = run_taskq(bench, sim, k, n, timeout)
        rows.append(cells("taskq", ours, n, None))
        if peers.get("bullmq"):
            client.flushdb()
            script = str(peers["bullmq"] / "bench.mjs")
            produce = ["node", script, "produce", url, str(n)]
            run = run_peer(
                produce, ["node", script, "work", url, sim, str(k), str(n)], client, n, timeout, sim
            )
            rows.append(cells("BullMQ", run, n, ours))
        if peers.get("arq"):
            client.flushdb()
            script = str(PEERS_DIR / "arq" / "bench_arq.py")
            python = str(peers["arq"])
            produce = [python, script, "produce", url, str(n)]
            run = run_peer(
                produce, [python, script, "work", url, sim, str(k), str(n)], client, n, timeout, sim
            )
            rows.append(cells("arq", run, n, ours))
        client.flushdb()
    return rows


def report(
    rows_wanted: str = "zero,latency", repeat: int = 1, peer_names: str = "bullmq,arq", scale: float = 1.0
) -> str:
    """Install the peers, run the workloads, return the table."""
    want = {p.strip() for p in peer_names.split(",") if p.strip()}
    peers: dict[str, Any] = {}
    if "bullmq" in want:
        peers["bullmq"] = install_bullmq()
    if "arq" in want:
        peers["arq"] = install_arq()
    rows: list[list[str]] = []
    with private_redis() as url:
        for _ in range(repeat):
            if "zero" in rows_wanted:
                n = int(6000 * scale)
                rows += [[f"latency 0, 200 in flight, {n:,} jobs", *[""] * 6]]
                rows += workload(url, "0", 200, n, peers)
            if "latency" in rows_wanted:
                n = int(10_000 * scale)
                rows += [[f"latency 1 s, 1,000 in flight, {n:,} jobs (ideal 1,000/s)", *[""] * 6]]
                rows += workload(url, "1", 1000, n, peers)
    header = ["worker", "jobs/s (steady)", "worker CPU ms/job", "Redis CPU ms/job", "enqueue Redis ms/job",
              "RSS / PSS MB", "notes"]  # fmt: skip
    title = f"peers, one worker process each, same simulator and Redis (BullMQ {BULLMQ_VERSION} on Node "
    title += f"{node_version()}, arq {ARQ_VERSION})"
    return table(title, header, rows)


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--rows", default="zero,latency", help="zero, latency or both (default)")
    parser.add_argument("--repeat", type=int, default=1, help="run each row this many times")
    parser.add_argument("--peers", default="bullmq,arq", help="which peers to run beside taskq")
    parser.add_argument("--jobs", type=float, default=1.0, help="scale the job counts (0.1 for a smoke run)")
    opts = parser.parse_args()
    print(f"peer benchmark on {machine()}\n")
    print(report(opts.rows, opts.repeat, opts.peers, opts.jobs))


def node_version() -> str:
    if not shutil.which("node"):
        return "-"
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
