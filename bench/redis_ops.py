"""Benchmark: Redis commands per finished task vs RQ's per job, by INFO commandstats on a private Redis.

taskq: N tasks through HTTP admission (the intake app, auth and rate limit included), claim, provider
call (simulator, latency 0), ack and a signed webhook delivered to a local receiver, by one drain
process. RQ: N no-op jobs through enqueue_many and a SimpleWorker in burst mode. commandstats counts
every command, including each redis.call inside a Lua script (EVALSHA itself counts once more).
The commands this script issues to watch progress are subtracted.

Run: python bench/redis_ops.py [--tasks 2000] [--batch 500]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from importlib import resources
from typing import Any

import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import worker
from bench.support import machine, private_redis

from taskq.api import create_app
from taskq.scripts import source
from taskq.settings import Settings
from taskq.store import Store

WEBHOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "webhooks.py")
IGNORED = {"info", "config|resetstat", "config"}
SCRIPTS = [
    entry.name.removesuffix(".lua")
    for entry in resources.files("taskq").joinpath("lua").iterdir()
    if entry.name.endswith(".lua") and not entry.name.endswith("_lib.lua")
]


def commandstats(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


class Monitor:
    """Counts the commands clients send (network requests), apart from those scripts run inside Redis,
    by reading MONITOR: a command a Lua script runs is reported with client type "lua"."""

    STOP = "taskq-bench-monitor-stop"

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: Counter[str] = Counter()
        self.by_script: Counter[str] = Counter()  # commands run inside each script, by script name
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def _run(self) -> None:
        names = {hashlib.sha1(source(name).encode()).hexdigest(): name for name in SCRIPTS}
        client = redis.Redis.from_url(self.url, decode_responses=True)
        script = "-"
        with client.monitor() as monitor:
            self._ready.set()
            for event in monitor.listen():
                command = str(event.get("command", ""))
                if self.STOP in command:
                    return
                if event.get("client_type") == "lua":
                    self.by_script[script] += 1
                    continue
                name, _, rest = command.partition(" ")
                self.sent[name.lower()] += 1
                # MONITOR shows a script's call before the commands it runs.
                script = names.get(rest.split(" ", 1)[0], "-") if name.lower() == "evalsha" else "-"

    def __enter__(self) -> Monitor:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        redis.Redis.from_url(self.url).echo(self.STOP)
        self._thread.join(30)


def _receiver() -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, WEBHOOKS, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}/hook"


def redis_cpu(client: redis.Redis) -> float:
    """Seconds of CPU the Redis server process has used (user + system)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def taskq_ops(
    url: str, sim: str, hook: str, n: int, watch: bool = True, batch: int = 500
) -> tuple[Counter[str], int, Counter[str], float, Counter[str]]:
    """Commands for n tasks from admission to delivered webhook: (per-command counts, own commands,
    commands clients sent, Redis CPU seconds, commands run inside each script). With watch=False no
    MONITOR runs (it costs Redis CPU)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    bench = worker.Bench(url)
    org, key = Store(client).create_org("ops", credits=10**9, concurrency=10**5, queue_limit=10**6)
    settings = Settings(openai_api_key="sk-bench", webhook_allow_networks=["127.0.0.0/8"])
    http = create_app(settings, client=redis.Redis.from_url(url, decode_responses=True)).test_client()
    env = bench.drain_env(sim, TASKQ_WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8")
    drain = worker.spawn_out(["-c", worker.DRAIN, "200"], env)
    time.sleep(2.5)  # imports, first idle wait: not part of the per-task cost
    shard = Store(client).org(org).shard
    client.config_resetstat()
    monitor = Monitor(url).__enter__() if watch else None
    cpu = redis_cpu(client)
    for start in range(0, n, batch):
        body = [
            {
                "taskType": "CHATGPT",
                "payload": {"prompt": f"ops {i}", "country": "US"},
                "webhook": {"url": hook},
            }
            for i in range(start, min(n, start + batch))
        ]
        headers = {"Authorization": f"Bearer {key}"}
        if batch == 1:  # one at a time: the single-task endpoint (no batch record)
            r = http.post("/v1/async/task", json=body[0], headers=headers)
            assert r.status_code == 200 and r.json["success"], r.json
        else:
            r = http.post("/v1/async/task/batch", json=body, headers=headers)
            assert r.status_code == 200 and r.json["summary"]["failed"] == 0, r.json
    own = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        pipe.hmget(shard.org(org), ["queued", "inflight"])
        pipe.zcard(shard.wh_due)
        pipe.zcard(shard.wh_proc)
        (queued, inflight), due, sending = pipe.execute()
        own += 3
        if int(queued or 0) + int(inflight or 0) + due + sending == 0:
            break
        time.sleep(0.25)
    cpu = redis_cpu(client) - cpu
    stats = commandstats(client)
    sent: Counter[str] = Counter()
    by_script: Counter[str] = Counter()
    if monitor is not None:
        monitor.__exit__()
        sent, by_script = monitor.sent, monitor.by_script
        sent["hmget"] -= own // 3  # this script's own progress checks
        sent["zcard"] -= 2 * (own // 3)
    drain.send_signal(signal.SIGTERM)
    drain.communicate(timeout=60)
    return stats, own, sent, cpu, by_script


def rq_ops(
    url: str, n: int, watch: bool = True, batch: int = 500
) -> tuple[Counter[str], Counter[str], float]:
    from rq import Queue
    from rq.serializers import JSONSerializer

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.config_resetstat()
    monitor = Monitor(url).__enter__() if watch else None
    cpu = redis_cpu(client)
    queue = Queue("bench", connection=client, serializer=JSONSerializer)
    for start in range(0, n, batch):
        queue.enqueue_many(
            [Queue.prepare_data("bench.worker.noop_job") for _ in range(start, min(n, start + batch))]
        )
    proc = worker.spawn_out(["-c", worker.RQ_WORKER, url], {})
    proc.communicate(timeout=300)
    cpu = redis_cpu(client) - cpu
    stats = commandstats(redis.Redis.from_url(url, decode_responses=True))
    if monitor is None:
        return stats, Counter(), cpu
    monitor.__exit__()
    return stats, monitor.sent, cpu


def total(stats: Counter[str]) -> int:
    return sum(calls for name, calls in stats.items() if name not in IGNORED)


def measure(n: int = 2000, batch: int = 500) -> dict[str, Any]:
    """Commands per finished task (taskq) and per job (RQ), with the five most frequent of each; tasks
    submitted in batches of `batch` (RQ: enqueue_many of as many jobs)."""
    receiver, hook = _receiver()
    try:
        with private_redis() as url, worker.simulator("0") as sim:
            ours, own, ours_sent, _, by_script = taskq_ops(url, sim, hook, n, batch=batch)
            theirs, theirs_sent, _ = rq_ops(url, n, batch=batch)
        # Redis CPU without MONITOR (which costs Redis CPU of its own), on a fresh server each.
        with private_redis() as url, worker.simulator("0") as sim:
            _, _, _, ours_cpu, _ = taskq_ops(url, sim, hook, n, watch=False, batch=batch)
        with private_redis() as url:
            _, _, theirs_cpu = rq_ops(url, n, watch=False, batch=batch)
    finally:
        assert receiver.stdin is not None
        receiver.stdin.close()
        receiver.wait(10)
    return {
        "taskq": (total(ours) - own) / n,
        "rq": total(theirs) / n,
        "taskq_sent": total(ours_sent) / n,
        "taskq_by_script": [(name, round(calls / n, 2)) for name, calls in by_script.most_common()],
        "rq_sent": total(theirs_sent) / n,
        "taskq_cpu_us": ours_cpu / n * 1e6,
        "rq_cpu_us": theirs_cpu / n * 1e6,
        "taskq_top": [
            (name, round(calls / n, 2)) for name, calls in ours.most_common(6) if name not in IGNORED
        ],
        "rq_top": [
            (name, round(calls / n, 2)) for name, calls in theirs.most_common(6) if name not in IGNORED
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500, help="tasks per submission (1: one at a time)")
    args = parser.parse_args()
    figures = measure(args.tasks, args.batch)
    print(f"machine: {machine()}; {args.tasks} tasks submitted {args.batch} per request")
    print(f"taskq: {figures['taskq']:.1f} Redis commands per finished task (target <= 15)")
    print(f"   most frequent per task: {json.dumps(figures['taskq_top'])}")
    print(f"   run inside each script, per task: {json.dumps(figures['taskq_by_script'])}")
    print(f"taskq: {figures['taskq_sent']:.2f} commands sent by clients per finished task (round trips)")
    print(f"RQ   : {figures['rq']:.1f} Redis commands per job")
    print(f"RQ   : {figures['rq_sent']:.2f} commands sent by clients per job")
    print(f"   most frequent per job: {json.dumps(figures['rq_top'])}")
    print(
        f"Redis CPU per finished task: taskq {figures['taskq_cpu_us']:.0f} us, "
        f"RQ {figures['rq_cpu_us']:.0f} us "
        f"per job ({figures['rq_cpu_us'] / figures['taskq_cpu_us']:.1f}x less for taskq)"
    )


if __name__ == "__main__":
    main()
