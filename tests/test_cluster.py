"""taskq on a real 3-master Redis Cluster: intake, two `taskq worker` processes, kill -9 of one of them."""

from __future__ import annotations

import argparse
import itertools
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from rq import Worker

from taskq.api import create_app
from taskq.connection import connect
from taskq.settings import DEFAULT_PRICES
from taskq.store import Store
from taskq.worker.commands import cmd_worker
from taskq.worker.hosting import rq_url
from tests.support.clients import inspected
from tests.support.cluster import binaries, free_ports, place_shards, redis_cluster
from tests.support.env import PROVIDER_ENV
from tests.support.orgs import auth
from tests.support.settings import make_settings
from tests.support.waits import wait_for

SHARDS = 3
ORGS_PER_SHARD = 2
TYPES = ("CHATGPT", "GEMINI")


def test_rq_shares_the_queue_redis_unless_that_is_a_cluster() -> None:
    assert rq_url(make_settings(redis_url="redis://q:6379/2")) == "redis://q:6379/2"
    plain = make_settings(redis_url="redis+cluster://q:7000", rq_redis_url="redis://rq:6379/0")
    assert rq_url(plain) == "redis://rq:6379/0"
    with pytest.raises(ValueError, match="TASKQ_RQ_REDIS_URL"):
        rq_url(make_settings(redis_url="redis+cluster://q:7000"))
    with pytest.raises(ValueError, match="TASKQ_RQ_REDIS_URL"):
        rq_url(make_settings(redis_url="redis://q:7000", redis_cluster=True))
    with pytest.raises(ValueError, match="plain Redis"):
        rq_url(make_settings(redis_url="redis://q:6379", rq_redis_url="redis+cluster://rq:7000"))


def test_taskq_worker_on_a_cluster_without_an_rq_redis_refuses_to_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = argparse.Namespace(processes=1, concurrency=1, drain_seconds=None)
    assert cmd_worker(args, make_settings(redis_url="redis+cluster://127.0.0.1:9")) == 2
    assert "set TASKQ_RQ_REDIS_URL" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    with redis_cluster(3) as url:
        place_shards(url, SHARDS)  # one shard per master: every call crosses to the right node
        yield url


@pytest.fixture(scope="module")
def rq_redis_url() -> Iterator[str]:
    """A plain redis-server for RQ's supervision data (RQ cannot use the cluster)."""
    server, _ = binaries()
    [port] = free_ports(1)
    with tempfile.TemporaryDirectory(prefix="taskq-rq-") as workdir:
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        wait_for(lambda: _pings(url), 10, "the RQ redis-server")
        yield url
        proc.kill()
        proc.wait(10)


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.ConnectionError:
        return False


def kill_session(sid: int) -> None:
    """kill -9 every process of a session: a machine gone (RQ puts its work horse in a group of its own)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `python -m taskq ...` in its own process group (a whole "machine" can be killed)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "taskq", *args], env={**os.environ, **env},
                                start_new_session=True, stdout=subprocess.DEVNULL)  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            kill_session(proc.pid)
            proc.wait(5)


class Intake:
    """The Flask intake on a RedisCluster client, driven through its test client."""

    def __init__(self, url: str) -> None:
        self.settings = make_settings(
            redis_url=url, shards=SHARDS, rate_limit_per_second=100_000, admin_token="admin"
        )
        self.client = connect(url)
        self.store = Store(self.client, SHARDS)
        self.http: Any = create_app(self.settings, client=self.client).test_client()
        self.rng = random.Random(7)

    def orgs_on_every_shard(self) -> dict[str, str]:
        """org id -> api key, ORGS_PER_SHARD orgs in each shard (org ids are random: create until so)."""
        orgs: dict[str, str] = {}
        per_shard: dict[int, int] = defaultdict(int)
        while len(orgs) < SHARDS * ORGS_PER_SHARD:
            org_id, key = self.store.create_org("c", credits=10**6, concurrency=10_000, queue_limit=10**5)
            shard = self.store.org(org_id).shard.index
            if per_shard[shard] < ORGS_PER_SHARD:
                per_shard[shard] += 1
                orgs[org_id] = key
        return orgs

    def submit(self, api_key: str, n: int) -> list[str]:
        """One batch of n tasks in random priority order and mixed types; return the task ids."""
        tasks = [
            {"taskType": TYPES[i % 2], "payload": {"prompt": f"q{i}", "country": "US"},
             "priority": self.rng.randint(1, 10)}
            for i in range(n)
        ]  # fmt: skip
        r = self.http.post("/v1/async/task/batch", json=tasks, headers=auth(api_key))
        assert r.status_code == 200, r.json
        ids = [x["task"]["id"] for x in r.json["results"]]
        assert len(ids) == n
        return ids

    def tasks(self, org: str, ids: list[str]) -> list[dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(self.store.org(org).shard.task(task_id))
        return list(pipe.execute())

    def busy(self, orgs: dict[str, str]) -> int:
        """Tasks queued or in flight over all the orgs."""
        return sum(int(f["queued"]) + int(f["inflight"]) for f in map(self.store.org_fields, orgs))

    def inflight(self, orgs: dict[str, str]) -> int:
        return sum(int(self.store.org_fields(org)["inflight"]) for org in orgs)


@pytest.mark.redis
@pytest.mark.slow
def test_two_workers_on_a_cluster_run_everything_once_in_priority_order_and_survive_kill_9(
    cluster_url: str, rq_redis_url: str, processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    intake = Intake(cluster_url)
    assert intake.http.get("/readyz").status_code == 200  # every script loads on every master
    orgs = intake.orgs_on_every_shard()

    # Phase 1: 3,000 tasks admitted before any worker runs, so the claim order is pure priority.
    first = {org: intake.submit(key, 500) for org, key in orgs.items()}
    [sim_port] = free_ports(1)
    processes("simulator", "--port", str(sim_port), "--latency", "0.3", env={})
    env = {
        "TASKQ_REDIS_URL": cluster_url, "TASKQ_SHARDS": str(SHARDS), "TASKQ_RQ_REDIS_URL": rq_redis_url,
        "TASKQ_UPSTREAM_BASE_URL": f"http://127.0.0.1:{sim_port}", "TASKQ_LEASE_SECONDS": "3",
        "TASKQ_REAPER_INTERVAL_SECONDS": "1", "TASKQ_WORKER_IDLE_WAIT_SECONDS": "0.5",
        "TASKQ_SHUTDOWN_GRACE_SECONDS": "1", **PROVIDER_ENV,
        # Strict priority across task types: a slow-starting lane would let a lower-priority task of the
        # other type go first (flow control's design: a paced lane holds back only its own tasks).
        "TASKQ_RATE_SLOW_START": "false",
    }  # fmt: skip
    workers = [processes("worker", "--processes", "1", "--concurrency", "200", env=env) for _ in range(2)]
    wait_for(lambda: intake.busy(orgs) == 0, 40, "the first 3,000 tasks")

    by_shard: dict[int, list[dict[str, str]]] = defaultdict(list)
    for org, ids in first.items():
        records = intake.tasks(org, ids)
        assert {(r["status"], r["attempts"], r["charged"] == r["cost"]) for r in records} == {
            ("COMPLETED", "1", True)
        }
        by_shard[intake.store.org(org).shard.index] += records
    for shard, records in by_shard.items():
        # The fencing token is the shard's claim counter: claim order, exact even across processes.
        claimed = [int(r["prio"]) for r in sorted(records, key=lambda r: int(r["token"]))]
        inversions = sum(later > earlier for earlier, later in itertools.pairwise(claimed))
        assert inversions == 0, f"shard {shard}: a lower priority was claimed before a higher one"
    assert len(Worker.all(connection=redis.Redis.from_url(rq_redis_url))) == 2  # RQ lives off the cluster

    # Phase 2: a second wave reaches the idle workers (per-shard wake-ups); one machine dies mid-run.
    second = {org: intake.submit(key, 250) for org, key in orgs.items()}
    wait_for(lambda: intake.inflight(orgs) >= 300, 20, "both workers busy")
    kill_session(workers[0].pid)
    wait_for(lambda: intake.busy(orgs) == 0, 40, "recovery of the killed worker's tasks")

    retried = 0
    for org, ids in second.items():
        records = intake.tasks(org, ids)
        assert {(r["status"], r["charged"] == r["cost"]) for r in records} == {("COMPLETED", True)}
        retried += sum(int(r["attempts"]) > 1 for r in records)
    assert retried > 0  # the dead worker's leases expired and the reaper requeued them
    print(f"\ncluster: {retried} tasks of the killed worker requeued by the reaper and completed")

    for org in orgs:  # charged exactly once: credits dropped by exactly the cost of every task
        fields = intake.store.org_fields(org)
        cost = sum(DEFAULT_PRICES[TYPES[i % 2]] for n in (500, 250) for i in range(n))
        assert (int(fields["credits"]), int(fields["reserved"])) == (10**6 - cost, 0)
    for path in ("/metrics", "/dashboard/data"):  # gauges read every shard, across the slots
        assert intake.http.get(path, headers={"Authorization": "Bearer admin"}).status_code == 200


@pytest.mark.redis
@pytest.mark.slow
def test_schedules_on_every_shard_fire_once_through_cluster_clients(cluster_url: str) -> None:
    """The API, the firing and the workers' schedule loop (which polls on a cluster) on a cluster."""
    import asyncio

    from taskq.worker.clients import redis_client
    from taskq.worker.schedules import run_schedules

    intake = Intake(cluster_url)
    orgs = intake.orgs_on_every_shard()
    task = {"taskType": "CHATGPT", "payload": {"prompt": "scheduled", "country": "US"}}
    made = {}
    for org_id, key in orgs.items():
        body = {"name": "on a cluster", "everySeconds": 1, "tasks": [task]}
        answer = intake.http.post("/v1/async/schedules", json=body, headers=auth(key))
        assert answer.status_code == 200, answer.json
        made[org_id] = answer.json["schedule"]["id"]

    def runs(org_id: str) -> int:
        shard = intake.store.org(org_id).shard
        return int(inspected(intake.client).llen(shard.sched_runs(made[org_id])))

    async def loops() -> None:
        stop = asyncio.Event()
        clients = [redis_client(intake.settings) for _ in range(2)]
        tasks = [asyncio.create_task(run_schedules(c, intake.settings, stop)) for c in clients]
        end = time.monotonic() + 30
        while not all(runs(o) >= 2 for o in orgs) and time.monotonic() < end:
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*tasks)
        for c in clients:
            await c.aclose()

    asyncio.run(loops())
    for org_id, key in orgs.items():
        shown = intake.http.get(f"/v1/async/schedules/{made[org_id]}", headers=auth(key)).json["schedule"]
        ats = [r["at"] for r in shown["runs"]]
        assert len(ats) >= 2 and len(set(ats)) == len(ats)
        shard = intake.store.org(org_id).shard
        assert inspected(intake.client).llen(shard.org_tasks(org_id)) == len(ats), "a firing admitted twice"
