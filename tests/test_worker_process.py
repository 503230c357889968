"""Worker processes for real: kill -9 mid-flight, SIGTERM to `taskq worker`, RQ respawning a dead worker."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from rq import Queue, Worker

from taskq.store import Store
from tests.support.clients import Client, inspected
from tests.support.env import REAL_REDIS_URL
from tests.support.processes import session_members
from tests.support.settings import make_settings
from tests.support.tasks import admit_tasks, counters, nonzero, request
from tests.support.upstream import Upstream
from tests.support.waits import stuck_work, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]
DRAIN = "from taskq.worker.hosting import run; run()"


@pytest.fixture
def wstore(real_redis: Client) -> Store:
    return Store(real_redis)


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], upstream: Upstream, stderr: Any = None, **env: str) -> subprocess.Popen[bytes]:
        values = {
            "TASKQ_REDIS_URL": REAL_REDIS_URL, "TASKQ_UPSTREAM_BASE_URL": upstream.url,
            "TASKQ_OPENAI_API_KEY": "sk-test", "TASKQ_LEASE_SECONDS": "2",
            "TASKQ_REAPER_INTERVAL_SECONDS": "0.5", "TASKQ_WORKER_IDLE_WAIT_SECONDS": "0.2",
            "TASKQ_SHUTDOWN_GRACE_SECONDS": "1", **env,
        }  # fmt: skip
        proc = subprocess.Popen([sys.executable, *args], env={**os.environ, **values}, stderr=stderr,
                                start_new_session=True)  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:  # its RQ workers and drains go too (RQ puts a drain in a group of its own)
        for pid in [proc.pid, *session_members(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)


def stuck(store: Store, org: str) -> Callable[[], str]:
    """What a timed-out wait prints: the org's queued, leased and delayed tasks."""
    return lambda: stuck_work(inspected(store.client), store.org(org).shard, org)


def attempts(store: Store, org: str, ids: list[str]) -> list[tuple[str, int]]:
    pipe = store.client.pipeline()
    for task_id in ids:
        pipe.hmget(store.org(org).shard.task(task_id), ["status", "attempts"])
    return [(status, int(n or 0)) for status, n in pipe.execute()]  # no attempts before the first claim


def test_killed_worker_loses_nothing_and_its_tasks_complete_once(
    wstore: Store, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    n = 300
    org = wstore.create_org("crash", credits=100_000, concurrency=1000, queue_limit=10_000)[0]
    with Upstream(latency=3.0) as upstream:
        ids = admit_tasks(wstore, make_settings(), org, [request(prompt=f"k{i}") for i in range(n)])
        victim = spawn(["-c", DRAIN], upstream, TASKQ_WORKER_CONCURRENCY="500")
        wait_for(
            lambda: counters(wstore, org)["inflight"] == n, 30, "all tasks leased", stuck=stuck(wstore, org)
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        killed_at = time.monotonic()
        spawn(["-c", DRAIN], upstream, TASKQ_WORKER_CONCURRENCY="500")
        requeue = wait_for(lambda: all(a >= 2 for _, a in attempts(wstore, org, ids)), 30, "requeue",
                           stuck=stuck(wstore, org))  # fmt: skip
        wait_for(lambda: counters(wstore, org)["queued"] + counters(wstore, org)["inflight"] == 0, 30, "done",
                 stuck=stuck(wstore, org))  # fmt: skip
        finished = time.monotonic() - killed_at
        print(f"\nkill -9 with {n} leased: requeued and re-leased in {requeue:.2f}s, done in {finished:.2f}s")
    assert {status for status, _ in attempts(wstore, org, ids)} == {"COMPLETED"}
    assert nonzero(counters(wstore, org)) == {"credits": 100_000 - n * 5}  # charged exactly once each
    assert {wstore.task(wstore.org(org), i).charged for i in ids} == {5}


def test_sigterm_to_taskq_worker_finishes_or_releases_everything_and_exits_0(
    wstore: Store, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    org = wstore.create_org("term", credits=100_000, concurrency=1000, queue_limit=10_000)[0]
    with Upstream() as upstream:
        quick = admit_tasks(
            wstore, make_settings(), org, [request(prompt=f"slow:0.3:{i}") for i in range(20)]
        )
        slow = admit_tasks(wstore, make_settings(), org, [request(prompt=f"slow:60:{i}") for i in range(30)])
        # All 50 at once (no slow start of the fresh lane), so the quick ones are still running too.
        pool = spawn(["-m", "taskq", "worker", "--processes", "1", "--concurrency", "100"], upstream,
                     TASKQ_RATE_SLOW_START="false")  # fmt: skip
        rq = redis.Redis.from_url(REAL_REDIS_URL)
        wait_for(
            lambda: counters(wstore, org)["inflight"] == 50,
            30,
            "all tasks in flight",
            stuck=stuck(wstore, org),
        )
        [worker] = Worker.all(connection=rq)  # visible to `rq info`
        assert worker.get_state() == "busy"
        pool.send_signal(signal.SIGTERM)
        took = wait_for(lambda: pool.poll() is not None, 15, "taskq worker to exit")
        print(f"\nSIGTERM with 50 calls in flight: exited {pool.returncode} after {took:.2f}s")
    assert pool.returncode == 0
    assert {status for status, _ in attempts(wstore, org, quick)} == {"COMPLETED"}
    assert set(attempts(wstore, org, slow)) == {("QUEUED", 0)}
    assert nonzero(counters(wstore, org)) == {
        "credits": 100_000 - 20 * 5,
        "reserved": 150,
        "queued": 30,
        "q1": 30,
    }
    assert Worker.all(connection=rq) == [] and Queue.all(connection=rq) == []


def test_rq_respawns_a_killed_worker_process_with_a_fresh_drain(
    wstore: Store, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    org = wstore.create_org("respawn", credits=100_000, concurrency=1000, queue_limit=10_000)[0]
    rq = redis.Redis.from_url(REAL_REDIS_URL)
    with Upstream(latency=0.5) as upstream:
        pool = spawn(["-m", "taskq", "worker", "--processes", "1", "--concurrency", "50"], upstream)
        wait_for(
            lambda: [w.get_state() for w in Worker.all(connection=rq)] == ["busy"], 20, "a draining worker"
        )
        [first] = Worker.all(connection=rq)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        wait_for(lambda: any(w.name != first.name for w in Worker.all(connection=rq)), 20, "a new worker")
        ids = admit_tasks(wstore, make_settings(), org, [request(prompt=f"r{i}") for i in range(100)])
        wait_for(lambda: counters(wstore, org)["queued"] + counters(wstore, org)["inflight"] == 0, 30, "done",
                 stuck=stuck(wstore, org))  # fmt: skip
        pool.send_signal(signal.SIGTERM)
        wait_for(lambda: pool.poll() is not None, 15, "taskq worker to exit")
    assert {status for status, _ in attempts(wstore, org, ids)} == {"COMPLETED"}
    assert pool.returncode == 0


def test_ttin_to_taskq_worker_logs_what_each_drain_waits_on_and_work_goes_on(
    wstore: Store, spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Any
) -> None:
    org = wstore.create_org("ttin", credits=100_000, concurrency=1000, queue_limit=10_000)[0]
    log_path = tmp_path / "worker.log"
    with Upstream(latency=0.2) as upstream, open(log_path, "wb") as log_file:
        pool = spawn(["-m", "taskq", "worker", "--processes", "1", "--concurrency", "50"], upstream,
                     stderr=log_file)  # fmt: skip
        rq = redis.Redis.from_url(REAL_REDIS_URL)
        wait_for(lambda: [w.get_state() for w in Worker.all(connection=rq)] == ["busy"], 20, "a drain")
        admit_tasks(wstore, make_settings(), org, [request(prompt=f"slow:30:{i}") for i in range(10)])
        # leased is not enough: the dump must find the calls under way (at the upstream)
        wait_for(lambda: upstream.inflight == 10, 20, "calls in flight")
        pool.send_signal(signal.SIGTTIN)
        wait_for(lambda: b"by where they wait" in log_path.read_bytes(), 10, "the drain's task dump")
        ids = admit_tasks(wstore, make_settings(), org, [request(prompt=f"t{i}") for i in range(20)])
        wait_for(lambda: {s for s, _ in attempts(wstore, org, ids)} == {"COMPLETED"}, 30, "more work done",
                 stuck=stuck(wstore, org))  # fmt: skip
        assert pool.poll() is None, "TTIN stopped the worker"
        pool.send_signal(signal.SIGTERM)
        wait_for(lambda: pool.poll() is not None, 15, "taskq worker to exit")
    log_text = log_path.read_text()
    found = re.search(r"drain \d+: (\d+) asyncio tasks, by where they wait:\n((?:\s+\d+ x .*\n)+)", log_text)
    assert found, log_text[-3000:]
    tasks, dump = int(found[1]), found[2]
    assert tasks >= 10 and "_claim_loop" in dump and "execute.py" in dump, dump
    assert pool.returncode == 0


def test_workers_of_a_killed_pool_release_their_tasks_and_exit(
    wstore: Store, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """kill -9 of `taskq worker` (the OOM killer, say): its RQ workers do not run on unsupervised."""
    org = wstore.create_org("orphan", credits=100_000, concurrency=1000, queue_limit=10_000)[0]
    with Upstream() as upstream:
        ids = admit_tasks(wstore, make_settings(), org, [request(prompt=f"slow:60:{i}") for i in range(10)])
        pool = spawn(["-m", "taskq", "worker", "--processes", "2", "--concurrency", "50"], upstream)
        wait_for(
            lambda: counters(wstore, org)["inflight"] == 10,
            30,
            "all tasks in flight",
            stuck=stuck(wstore, org),
        )
        os.kill(pool.pid, signal.SIGKILL)
        pool.wait(10)
        took = wait_for(lambda: session_members(pool.pid) == [], 30, "the pool's workers to exit")
        print(f"\nkill -9 of the pool: its workers exited {took:.1f} s later")
    assert set(attempts(wstore, org, ids)) == {("QUEUED", 0)}
    assert counters(wstore, org)["inflight"] == 0
