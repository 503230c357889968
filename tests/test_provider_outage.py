"""Provider outage: the upstream answers 503 for a while; tasks retry with back-off and complete, or fail
after the attempt limit with PROVIDER_UNAVAILABLE naming the provider. Nothing stays PROCESSING.

Defaults (CI): 60 tasks, a 3 s outage, about 15 s for both tests. Larger:
TASKQ_OUTAGE_TASKS=1000 TASKQ_OUTAGE_SECONDS=5 pytest tests/test_provider_outage.py -s
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from taskq.api import create_app
from taskq.store import Store
from tests.support.clients import Client
from tests.support.env import REAL_REDIS_URL, env_float, env_int
from tests.support.orgs import auth
from tests.support.processes import Processes, worker_env
from tests.support.settings import make_settings
from tests.support.tasks import org_counters, task_fields
from tests.support.upstream import Upstream
from tests.support.waits import stuck_work, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TASKS = env_int("TASKQ_OUTAGE_TASKS", 60)
OUTAGE = env_float("TASKQ_OUTAGE_SECONDS", 3.0)
CREDITS = 1_000_000
COST = 5  # CHATGPT


def submit(real_redis: Client, key: str, n: int) -> list[str]:
    http: Any = create_app(make_settings(), client=real_redis).test_client()
    body = [{"taskType": "CHATGPT", "payload": {"prompt": f"outage {i}", "country": "US"}} for i in range(n)]
    r = http.post("/v1/async/task/batch", json=body, headers=auth(key))
    assert r.status_code == 200 and r.json["summary"]["succeeded"] == n
    return [item["task"]["id"] for item in r.json["results"]]


def start_worker(procs: Processes, sim: Upstream, **env: str) -> None:
    values = worker_env(REAL_REDIS_URL, sim.url, TASKQ_LEASE_SECONDS="5", TASKQ_REAPER_INTERVAL_SECONDS="1",
                        TASKQ_WORKER_IDLE_WAIT_SECONDS="0.2", **env)  # fmt: skip
    procs.taskq("worker", ["worker", "--processes", "1", "--concurrency", "200"], values)


def test_tasks_retry_through_an_outage_and_each_completes_once(real_redis: Client, procs: Processes) -> None:
    store = Store(real_redis)
    org, key = store.create_org("outage", credits=CREDITS, concurrency=1000, queue_limit=100_000)
    shard = store.org(org).shard
    with Upstream(simulator=True) as sim:
        sim.down.set()
        # Back-off 0.25-0.5 s, 0.5-1 s, 1-2 s, 2-4 s, 4-8 s, 8-16 s, 16-32 s: eight attempts outlast an
        # outage of 31.75 s, however long a loaded machine takes to see every task refused once.
        start_worker(procs, sim, TASKQ_RETRY_BASE_SECONDS="0.5", TASKQ_MAX_ATTEMPTS="8")
        ids = submit(real_redis, key, TASKS)
        began = time.monotonic()

        def attempts() -> list[int]:
            return [int(a or 0) for [a] in task_fields(real_redis, shard, ids, ["attempts"])]

        wait_for(lambda: min(attempts()) >= 2, OUTAGE + 20, "every task to be refused at least once",
                 stuck=lambda: stuck_work(real_redis, shard, org))  # fmt: skip
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - began)))
        sim.down.clear()
        up = time.monotonic()

        def finished() -> bool:
            c = org_counters(real_redis, shard, org)
            return c["queued"] + c["inflight"] == 0

        recovered = wait_for(finished, 60, "every task to finish after the outage",
                             stuck=lambda: stuck_work(real_redis, shard, org))  # fmt: skip
        refused = sim.refused
    records = task_fields(real_redis, shard, ids, ["status", "attempts", "charged"])
    spread = Counter(int(r[1]) for r in records)
    print(
        f"\nprovider 503 for {up - began:.1f} s: {refused} calls refused, attempts per task "
        f"{dict(sorted(spread.items()))}; all done {recovered:.2f} s after the provider came back"
    )
    assert {r[0] for r in records} == {"COMPLETED"}
    assert min(spread) >= 2 and refused >= TASKS
    assert {r[2] for r in records} == {str(COST)}
    assert org_counters(real_redis, shard, org) == {
        "credits": CREDITS - COST * TASKS, "reserved": 0, "queued": 0, "inflight": 0
    }  # fmt: skip
    assert real_redis.zcard(shard.proc) == 0 and real_redis.zcard(shard.delayed) == 0


def test_a_lasting_outage_fails_tasks_after_the_attempt_limit_with_a_clear_code(
    real_redis: Client, procs: Processes
) -> None:
    store = Store(real_redis)
    org, key = store.create_org("outage", credits=CREDITS, concurrency=1000, queue_limit=100_000)
    shard = store.org(org).shard
    http: Any = create_app(make_settings(), client=real_redis).test_client()
    with Upstream(simulator=True) as sim:
        sim.down.set()
        start_worker(procs, sim, TASKQ_RETRY_BASE_SECONDS="0.2", TASKQ_MAX_ATTEMPTS="3")
        ids = submit(real_redis, key, TASKS)

        def finished() -> bool:
            c = org_counters(real_redis, shard, org)
            return c["queued"] + c["inflight"] == 0

        took = wait_for(
            finished, 60, "every task to give up", stuck=lambda: stuck_work(real_redis, shard, org)
        )
        refused = sim.refused
    records = task_fields(real_redis, shard, ids, ["status", "attempts", "charged", "error"])
    print(f"\nlasting outage: {TASKS} tasks failed after 3 attempts each in {took:.2f} s ({refused} refused)")
    assert {(r[0], r[1], r[2]) for r in records} == {("FAILED", "3", "0")}
    assert refused == 3 * TASKS
    errors = [json.loads(r[3]) for r in records]
    assert {e["code"] for e in errors} == {"PROVIDER_UNAVAILABLE"}
    message = errors[0]["message"]
    assert message.startswith("OpenAI returned 503") and "gave up after 3 attempts" in message
    view = http.get(f"/v1/async/task/{ids[0]}", headers=auth(key)).json
    assert view["task"]["status"] == "FAILED"
    assert view["response"]["error"] == errors[0]
    assert view["credits"]["creditsCharged"] in (0, None)
    assert org_counters(real_redis, shard, org) == {
        "credits": CREDITS,
        "reserved": 0,
        "queued": 0,
        "inflight": 0,
    }
    assert real_redis.zcard(shard.proc) == 0 and real_redis.zcard(shard.delayed) == 0
