"""Two `taskq worker` pools fire an everySeconds 2 schedule; one pool is killed -9 midway: every occurrence
fires once, none twice.

Default (CI) size: 20 s of firings (10 occurrences). The size the figures in the README come from:
TASKQ_SCHEDULE_PROOF_SECONDS=60 pytest tests/test_schedules_process.py -s
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from taskq import keys, schedules
from taskq.schedules import firing_batch_id
from taskq.schemas.tasks import epoch_ms
from taskq.store import Store, now_ms
from tests.support.clients import Client
from tests.support.env import REAL_REDIS_URL, env_float
from tests.support.processes import Processes, start_simulator, worker_env
from tests.support.settings import make_settings
from tests.support.waits import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SECONDS = env_float("TASKQ_SCHEDULE_PROOF_SECONDS", 20.0)
EVERY_MS = 2000
TASK = {"taskType": "CHATGPT", "payload": {"prompt": "scheduled", "country": "US"}}


@pytest.mark.timeout(120 + int(SECONDS))
def test_two_pools_fire_each_occurrence_once_even_when_one_is_killed(
    real_redis: Client, tmp_path: Path
) -> None:
    store = Store(real_redis)
    org_id, _ = store.create_org("proof", credits=10**9, concurrency=1000, queue_limit=10**6)
    org = store.org(org_id)
    procs = Processes(tmp_path / "logs")
    try:
        env = worker_env(REAL_REDIS_URL, start_simulator(procs))
        argv = ["worker", "--processes", "1", "--concurrency", "50"]
        pools = [procs.taskq(f"pool{i}", argv, env) for i in range(2)]
        wait_for(lambda: real_redis.pubsub_numsub(keys.SCHEDULES_CHANGED)[0][1] == 2, 90,
                 "both pools' schedule loops")  # fmt: skip
        made = schedules.create(
            store, make_settings(), org, {"name": "proof", "everySeconds": 2, "tasks": [TASK]}
        )
        first = epoch_ms(made["nextRunAt"])
        end = first + int(SECONDS * 1000) - EVERY_MS // 2  # the last occurrence due: end - 1000
        time.sleep(max(0.0, (first + (end - first) / 2 - now_ms()) / 1000))
        procs.kill_group(pools[0])
        killed_at = now_ms()
        time.sleep(max(0.0, (end - now_ms()) / 1000))
        schedules.set_paused(store, make_settings(), org, made["id"], True)
        wait_for(lambda: not schedules.get(store, org, made["id"])["firing"], 30, "the last firing recorded")
    finally:
        procs.close()

    grid = [first + k * EVERY_MS for k in range(int(SECONDS * 1000) // EVERY_MS + 2)]
    batch_of = {firing_batch_id(made["id"], at): at for at in grid}
    task_ids = real_redis.lrange(org.shard.org_tasks(org_id), 0, -1)
    batches = [str(real_redis.hget(org.shard.task(str(t)), "batch")) for t in task_ids]
    assert all(b in batch_of for b in batches), "a batch that is no occurrence of the schedule"
    fired = sorted(batch_of[b] for b in batches)
    expected = [at for at in grid if at < end]
    doubled = len(fired) - len(set(fired))
    lost = [at for at in expected if at not in fired]
    runs = schedules.get(store, org, made["id"])["runs"]  # the latest RUNS_KEPT
    late = [epoch_ms(r["firedAt"]) - epoch_ms(r["at"]) for r in runs]
    print(
        f"\nschedule proof: {SECONDS:g} s, everySeconds 2, "
        f"pool0 killed -9 at +{(killed_at - first) / 1000:.1f} s: "
        f"{len(fired)} firings of {len(expected)} occurrences, {doubled} doubled, {len(lost)} lost "
        f"({[(at - first) / 1000 for at in lost]}); firing delay over the last {len(late)}: "
        f"median {statistics.median(late):.0f} ms, max {max(late)} ms"
    )
    assert doubled == 0
    assert abs(len(set(fired)) - len(expected)) <= 1 and len(lost) <= 1
