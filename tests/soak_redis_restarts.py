"""Soak (not part of the suite): crash Redis with kill -9 over and over under load, and check after
each restart that every acknowledged task finishes.

One private redis-server (AOF everysec), `taskq serve`, `taskq worker` and the simulator; each cycle
submits for 0.5-3 s, kills Redis, keeps it down 0.2-6 s, restarts it, submits 1-3 s more, then waits
until nothing is queued or in flight. When that takes over a minute it asks every drain for its
asyncio tasks (kill -TTIN), prints the counters and stops with exit status 1, leaving the logs in
the work directory.

Run: python -m tests.soak_redis_restarts [--cycles 40] [--seed N] [--dir /tmp/taskq-soak]

The stock server's AOF bug (see README, "Redis settings") shows up here after repeated crashes as
tasks counted as queued that no lane holds; the embedded server repairs its AOF, a plain
redis-server 7.0 does not.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

from taskq.store import Store
from tests.support.clients import sync_client
from tests.support.processes import Processes, start_intake, worker_env
from tests.support.redis_server import RedisServer
from tests.support.submitters import Submitter
from tests.support.tasks import org_counters
from tests.support.upstream import Upstream

STUCK_SECONDS = 60


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cycles", type=int, default=40)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="taskq-soak-"))
    rng = random.Random(args.seed)
    procs = Processes(work / "logs")
    server = RedisServer(work / "redis").start()
    client = sync_client(server.url)
    store = Store(client)
    org, key = store.create_org("soak", credits=10**9, concurrency=1000, queue_limit=10**6)
    shard = store.org(org).shard
    print(f"soak in {work}", flush=True)
    try:
        with Upstream("0.02", simulator=True) as sim:
            env = worker_env(server.url, sim.url, TASKQ_LEASE_SECONDS="3", TASKQ_REAPER_INTERVAL_SECONDS="1")
            intake = start_intake(procs, env, workers=1)
            worker = procs.taskq("worker", ["worker", "--processes", "1", "--concurrency", "100"], env)
            for cycle in range(args.cycles):
                load = Submitter(intake, key)
                threads = [threading.Thread(target=load.run, args=(c,), daemon=True) for c in range(3)]
                for thread in threads:
                    thread.start()
                time.sleep(rng.uniform(0.5, 3))
                server.crash(signal.SIGKILL)
                down = rng.uniform(0.2, 6)
                time.sleep(down)
                server.start()
                time.sleep(rng.uniform(1, 3))
                load.stop.set()
                for thread in threads:
                    thread.join(30)
                start = time.monotonic()
                while True:
                    try:
                        counters = org_counters(client, shard, org)
                    except redis.RedisError:
                        time.sleep(0.5)
                        continue
                    if counters["queued"] + counters["inflight"] == 0:
                        took = time.monotonic() - start
                        print(f"cycle {cycle}: {len(load.acked)} acknowledged, Redis down {down:.1f} s, "
                              f"all done {took:.1f} s after the load stopped", flush=True)  # fmt: skip
                        break
                    if time.monotonic() - start > STUCK_SECONDS:
                        worker.send_signal(signal.SIGTTIN)
                        time.sleep(2)
                        print(f"cycle {cycle}: STUCK {counters}; logs in {work / 'logs'}", flush=True)
                        return 1
                    time.sleep(0.5)
    finally:
        procs.close()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
