"""Flow-control benchmark: tasks against a provider limit of RATE requests/s, with flow control off
(the anchor), with the rate configured, learned from 429s alone (no rate configured, no x-ratelimit-*
headers on successes), learned from headers (OpenAI's x-ratelimit-* on every response), and a
tokens-per-minute limit (tpm: TPM configured, RATE configured too).

Run: python bench/flow_control.py   (about 4 minutes; prints figures, asserts nothing)
     python bench/flow_control.py --runs configured --pools 2   (two pools of `taskq worker --processes 2`)
     python bench/flow_control.py --runs quota,revoked   (quota exhausted; a pool with a revoked key)

Each run: a fresh Redis, the simulator with --rate-limit RATE (OpenAI's 429 body and headers above it),
N CHATGPT tasks admitted at once, one drain process with K calls in flight (or --pools P pools of
`taskq worker --processes 2`). Figures: tasks COMPLETED/FAILED, wall time against the ideal N/RATE,
the share of upstream calls that were 429s, and the most calls the simulator saw in any 1 s window;
the tpm run also the most tokens in any 10 s window against TPM/6 (each simulated call uses 60 tokens);
and Redis commands per task (INFO commandstats over the run, the bench's own polling included).

quota: the simulator serves QUOTA calls per key, then OpenAI's insufficient_quota; N CHATGPT and
N/4 GEMINI tasks; watched for WATCH seconds: FAILED tasks, the lane's state, GEMINI's progress.
revoked: a pool of two keys, one answered with 401; every task should complete on the other.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from bench.support import free_port, machine, private_redis, spawn, table, wait_for  # noqa: E402
from bench.worker import DRAIN, Bench, spawn_out  # noqa: E402

from taskq.settings import Settings  # noqa: E402

LATENCY = "uniform:0.2,0.8"
TOKENS_PER_CALL = 60  # the simulator's OpenAI usage.total_tokens


@contextmanager
def limited_simulator(
    rate: float, quota: int = 0, revoked: tuple[str, ...] = (), headers: bool = True
) -> Any:
    port = free_port()
    code = (
        "from taskq.simulator.app import serve; "
        f"serve('127.0.0.1', {port}, '{LATENCY}', 0.0, rate_limit={rate}, quota={quota}, "
        f"revoked={revoked!r}, limit_headers={headers!r})"
    )
    proc = spawn(["-c", code])
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(url + "/healthz").status_code == 200)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def busiest_second(times_ms: list[int]) -> int:
    """The most calls in any 1 s window (sliding, at every call)."""
    times_ms = sorted(times_ms)
    most, lo = 0, 0
    for hi, t in enumerate(times_ms):
        while times_ms[lo] <= t - 1000:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


def busiest_window(times_ms: list[int], window_ms: int) -> int:
    """The most calls in any window of this length (sliding, at every call)."""
    times_ms = sorted(times_ms)
    most, lo = 0, 0
    for hi, t in enumerate(times_ms):
        while times_ms[lo] <= t - window_ms:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


def run(mode: str, n: int, k: int, rate: float, pools: int = 0, tpm: float = 0.0) -> dict[str, Any]:
    """One run in a fresh Redis and simulator; mode off | configured | learned | headers | tpm."""
    env = {"TASKQ_WORKER_CONCURRENCY": str(k), "TASKQ_MAX_ATTEMPTS": "5"}
    if mode == "off":
        env["TASKQ_FLOW_CONTROL"] = "false"
    elif mode == "configured":
        env["TASKQ_PROVIDER_RATES"] = f'{{"CHATGPT": {rate}}}'
    elif mode == "tpm":
        env["TASKQ_PROVIDER_RATES"] = f'{{"CHATGPT": {{"rps": {rate}, "tpm": {tpm}}}}}'
    ideal = n / rate if mode != "tpm" else max(n / rate, n * TOKENS_PER_CALL / (tpm / 60))
    with private_redis() as url, limited_simulator(rate, headers=mode != "learned") as sim:
        b = Bench(url)
        org = b.new_org()
        procs = start_workers(b, sim, k, pools, env)
        try:
            time.sleep(3.0 if pools else 2.0)  # imports and first idle wait
            t0 = time.monotonic()
            ids = b.admit(org, n)
            while b.remaining(org) and time.monotonic() - t0 < 40 * ideal:
                time.sleep(0.05)
            wall = time.monotonic() - t0
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.communicate(timeout=60)
        commands = sum(int(v["calls"]) for v in b.client.info("commandstats").values())
        statuses = statuses_of(b, org, ids)
        calls = httpx.get(sim + "/sim/calls").json()["calls"]
    limited = sum(1 for c in calls if c[3] == 429)
    return {
        "mode": mode,
        "completed": statuses.get("COMPLETED", 0),
        "failed": statuses.get("FAILED", 0),
        "wall": wall,
        "ideal": ideal,
        "calls": len(calls),
        "limited": limited,
        "busiest": busiest_second([c[0] for c in calls]),
        "commands": commands / n,
        "tokens10s": TOKENS_PER_CALL * busiest_window([c[0] for c in calls if c[3] == 200], 10_000),
    }


def quota_run(n: int, k: int, quota: int, watch: float) -> dict[str, Any]:
    """N CHATGPT + N/4 GEMINI tasks against a quota of `quota` calls per key; watched for `watch` s."""
    from taskq import flow

    with private_redis() as url, limited_simulator(0, quota=quota) as sim:
        b = Bench(url)
        org = b.new_org()
        procs = start_workers(b, sim, k, 0, {"TASKQ_GEMINI_API_KEY": "g-bench"})
        try:
            time.sleep(2.0)
            t0 = time.monotonic()
            chatgpt = b.admit(org, n)
            gemini = admit_gemini(b, org, n // 4)
            while time.monotonic() - t0 < watch:
                time.sleep(0.5)
            states = statuses_of(b, org, chatgpt)
            gemini_states = statuses_of(b, org, gemini)
            lanes = {lane["provider"]: lane for lane in flow.status(b.store)}
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.communicate(timeout=60)
    chatgpt_lane = lanes.get("CHATGPT", {})
    return {
        "chatgpt": states,
        "gemini": gemini_states,
        "state": chatgpt_lane.get("state"),
        "why": (chatgpt_lane.get("keys") or [{}])[0].get("why", ""),
        "gemini_lane": lanes.get("GEMINI", {}).get("state"),
    }


def admit_gemini(b: Bench, org: str, n: int) -> list[str]:
    from taskq.admission import Accepted, admit
    from taskq.providers import PAYLOAD_MODELS
    from taskq.schemas.tasks import TaskRequest, TaskType

    payloads = [
        PAYLOAD_MODELS["GEMINI"].model_validate({"prompt": f"g{i}", "country": "US"}) for i in range(n)
    ]
    batch = [TaskRequest(TaskType("GEMINI"), payload, 1, None, None) for payload in payloads]
    settings = Settings(openai_api_key="sk-bench", gemini_api_key="g-bench")
    outcomes = admit(b.store, settings, b.store.org(org), list(batch))
    return [o.task["id"] for o in outcomes if isinstance(o, Accepted)]


def revoked_run(n: int, k: int) -> dict[str, Any]:
    """A pool of two keys, one revoked (401): every task should complete on the other."""
    with private_redis() as url, limited_simulator(0, revoked=("sk-revoked",)) as sim:
        b = Bench(url)
        org = b.new_org()
        env = {"TASKQ_OPENAI_API_KEY": "", "TASKQ_OPENAI_API_KEYS": "sk-revoked,sk-good"}
        procs = start_workers(b, sim, k, 0, env)
        try:
            time.sleep(2.0)
            t0 = time.monotonic()
            ids = b.admit(org, n)
            while b.remaining(org) and time.monotonic() - t0 < 120:
                time.sleep(0.05)
            wall = time.monotonic() - t0
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.communicate(timeout=60)
        statuses = statuses_of(b, org, ids)
        calls = httpx.get(sim + "/sim/calls").json()["calls"]
    return {
        "statuses": statuses,
        "wall": wall,
        "refused": sum(1 for c in calls if c[3] == 401),
        "calls": len(calls),
    }


def start_workers(
    b: Bench, sim: str, k: int, pools: int, env: dict[str, str]
) -> list[subprocess.Popen[bytes]]:
    base = b.drain_env(sim, **env)
    if not pools:
        return [spawn_out(["-c", DRAIN, str(k)], base)]
    args = ["-m", "taskq", "worker", "--processes", "2", "--concurrency", str(k // (2 * pools))]
    return [spawn_out(args, base) for _ in range(pools)]


def statuses_of(b: Bench, org: str, ids: list[str]) -> dict[str, int]:
    pipe = b.client.pipeline()
    for task_id in ids:
        pipe.hget(b.store.org(org).shard.task(task_id), "status")
    counts: dict[str, int] = {}
    for status in pipe.execute():
        counts[str(status)] = counts.get(str(status), 0) + 1
    return counts


def row(label: str, r: dict[str, Any], rate: float) -> list[Any]:
    share = r["limited"] / max(1, r["calls"])
    return [
        label,
        f"{r['completed']}/{r['completed'] + r['failed']} completed, {r['failed']} failed",
        f"{r['wall']:.1f} s = {r['wall'] / r['ideal']:.2f}x ideal {r['ideal']:.0f} s",
        f"{r['completed'] / r['wall']:.1f}/s",
        f"{share:.1%} of {r['calls']}",
        f"{r['busiest']} (limit {rate:g})",
        f"{r['commands']:.1f}",
    ]


HEADER = ["run", "tasks", "time vs ideal N/rate", "tasks/s", "upstream 429s", "most calls in 1 s",
          "Redis commands/task"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", default="off,configured,learned,headers,tpm")
    parser.add_argument("--tasks", type=int, default=800)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--tpm", type=float, default=48000.0, help="tpm run: tokens per minute per key")
    parser.add_argument("--pools", type=int, default=0, help="P pools of `taskq worker --processes 2`")
    parser.add_argument("--quota", type=int, default=200, help="quota run: calls each key serves")
    parser.add_argument("--watch", type=float, default=60.0, help="quota run: seconds to watch")
    opts = parser.parse_args()
    print(f"flow control benchmark on {machine()}\n")
    rows = []
    for mode in opts.runs.split(","):
        if mode == "quota":
            q = quota_run(opts.tasks, opts.concurrency, opts.quota, opts.watch)
            print(
                f"quota exhausted after {opts.quota} calls per key, watched {opts.watch:g} s: "
                f"CHATGPT {q['chatgpt']}, lane {q['state']} ({q['why']}); "
                f"GEMINI {q['gemini']}, lane {q['gemini_lane']}"
            )
            continue
        if mode == "revoked":
            r = revoked_run(opts.tasks, opts.concurrency)
            print(
                f"pool of two keys, one revoked: {r['statuses']} in {r['wall']:.1f} s; "
                f"{r['refused']} of {r['calls']} upstream calls were 401s"
            )
            continue
        r = run(mode, opts.tasks, opts.concurrency, opts.rate, opts.pools, opts.tpm)
        where = f"{opts.pools} pools x 2 processes" if opts.pools else "1 process"
        label = {"learned": "learned (429s)", "headers": "learned (headers)", "tpm": f"tpm {opts.tpm:g}"}
        rows.append(row(f"{label.get(mode, mode)}, {where}, K={opts.concurrency}", r, opts.rate))
        if mode == "tpm":
            print(f"tpm run: most tokens in any 10 s window {r['tokens10s']} (limit {opts.tpm / 6:g} "
                  f"+ one call's {TOKENS_PER_CALL})")  # fmt: skip
    if rows:
        print(table(f"{opts.tasks} CHATGPT tasks at a {opts.rate:g} req/s provider limit", HEADER, rows))


if __name__ == "__main__":
    main()


def bench_rows(n: int = 800, k: int = 200, rate: float = 20.0) -> list[list[Any]]:
    """Rows of `make bench`: configured and learned flow control beside the same run with it off."""
    off, configured, learned = (run(mode, n, k, rate) for mode in ("off", "configured", "learned"))

    def figures(r: dict[str, Any]) -> str:
        share = r["limited"] / max(1, r["calls"])
        return f"{r['completed']}/{n} done, {r['wall'] / r['ideal']:.2f}x ideal, {share:.1%} 429s"

    return [
        [f"(f) {n} tasks at a {rate:g} req/s limit, K={k}: rate configured", figures(configured),
         "flow control off: " + figures(off), f"{configured['completed'] / max(1, off['completed']):.1f}x",
         "all done, <= 1.1x, <= 2%"],
        ["  rate learned (none configured)", figures(learned), "", "", "all done, <= 1.25x, <= 10%"],
    ]  # fmt: skip
