"""Receiver outage: the webhook receiver's port is closed for a while, then it comes back. Every event is
delivered, and the attempt log (GET /v1/async/task/{id}/deliveries) shows the retry schedule: each gap
between attempts lies within the jittered bounds of its schedule entry, and the gaps grow.

Defaults (CI): 40 tasks, receiver down 4 s, schedule [0.25, 0.5, 1, 2, 4, 8, 16]; about 15 s. Larger:
TASKQ_RECEIVER_TASKS=2000 TASKQ_RECEIVER_DOWN_SECONDS=5 pytest tests/test_receiver_outage.py -s
(the outage must stay under the schedule's 15.9 s minimum total, or deliveries run out of attempts).
A gap may exceed its schedule entry by SLACK: the worker shares a loaded machine; it is never shorter.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from datetime import datetime
from typing import Any

import pytest

from taskq.api import create_app
from taskq.store import Store
from tests.support.clients import Client
from tests.support.env import REAL_REDIS_URL, env_float, env_int
from tests.support.orgs import auth
from tests.support.processes import Processes, worker_env
from tests.support.receiver import ReceiverProcess
from tests.support.settings import make_settings
from tests.support.tasks import task_fields
from tests.support.upstream import Upstream
from tests.support.waits import stuck_work, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TASKS = env_int("TASKQ_RECEIVER_TASKS", 40)
DOWN = env_float("TASKQ_RECEIVER_DOWN_SECONDS", 4.0)
SCHEDULE = [0.25, 0.5, 1, 2, 4, 8, 16]
SLACK = 1.0  # claim polling (up to 0.1 s), the send and the record, on a loaded 2-core CI machine


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_events_wait_out_a_receiver_outage_on_the_retry_schedule(
    real_redis: Client, procs: Processes
) -> None:
    store = Store(real_redis)
    org, key = store.create_org("hooks", credits=1_000_000, concurrency=1000, queue_limit=100_000)
    shard = store.org(org).shard
    http: Any = create_app(
        make_settings(webhook_allow_networks=["127.0.0.0/8"]), client=real_redis
    ).test_client()
    receiver = ReceiverProcess(store.webhook_secrets(org)).prepare()  # its port stays closed for now
    with Upstream(simulator=True) as sim:
        env = worker_env(REAL_REDIS_URL, sim.url, TASKQ_WEBHOOK_SCHEDULE_SECONDS=json.dumps(SCHEDULE),
                         TASKQ_REAPER_INTERVAL_SECONDS="0.5", TASKQ_WEBHOOK_TIMEOUT_SECONDS="2")  # fmt: skip
        procs.taskq("worker", ["worker", "--processes", "1", "--concurrency", "100"], env)
        body = [
            {
                "taskType": "GOOGLE",
                "payload": {"query": f"outage {i}", "country": "US"},
                "webhook": {"url": receiver.url},
            }
            for i in range(TASKS)
        ]
        r = http.post("/v1/async/task/batch", json=body, headers=auth(key))
        assert r.json["summary"]["succeeded"] == TASKS
        ids = [item["task"]["id"] for item in r.json["results"]]
        wait_for(lambda: all(s == "COMPLETED" for [s] in task_fields(real_redis, shard, ids, ["status"])),
                 60, "the tasks to complete", stuck=lambda: stuck_work(real_redis, shard, org))  # fmt: skip
        down_since = time.monotonic()
        time.sleep(DOWN)
        receiver.start()
        try:
            back = time.monotonic()

            def delivered() -> bool:
                return all(s == "delivered" for [s] in task_fields(real_redis, shard, ids, ["wh_state"]))

            caught_up = wait_for(delivered, sum(SCHEDULE) + 30, "every event to be delivered",
                                 stuck=lambda: stuck_work(real_redis, shard, org, ids))  # fmt: skip
        finally:
            receiver.stop()

    histories = [http.get(f"/v1/async/task/{i}/deliveries", headers=auth(key)).json for i in ids]
    gaps_by_index: dict[int, list[float]] = {}
    for history in histories:
        [delivery] = history["deliveries"]
        attempts = delivery["attempts"]
        assert delivery["state"] == "delivered" and history["webhook"]["delivered"] is True
        assert [a["outcome"] for a in attempts] == ["retry"] * (len(attempts) - 1) + ["delivered"]
        assert all(a["statusCode"] is None and "Connect" in a["error"] for a in attempts[:-1])
        assert attempts[-1]["statusCode"] == 204
        assert len(attempts) >= 4  # attempts 1-4 fall within the first 1.75 s (+ 3 SLACK) of the outage
        at = [seconds(a["at"]) for a in attempts]
        gaps = [b - a for a, b in itertools.pairwise(at)]
        for n, gap in enumerate(gaps):
            nominal = SCHEDULE[n]
            assert nominal * 0.5 - 0.02 <= gap <= nominal + SLACK, (n, gap, attempts)
            gaps_by_index.setdefault(n, []).append(gap)
        assert all(b >= a - SLACK for a, b in itertools.pairwise(gaps)), gaps
    means = [statistics.mean(gaps_by_index[n]) for n in sorted(gaps_by_index)]
    assert means == sorted(means) and len(means) >= 3
    events = receiver.event_ids_by_task()
    assert events == {i: {f"msg_{i}"} for i in ids}
    print(
        f"\nreceiver down {back - down_since:.1f} s: {TASKS} events, attempts per event "
        f"{sorted({len(h['deliveries'][0]['attempts']) for h in histories})}, mean gaps "
        f"{[round(m, 2) for m in means]} s for schedule {SCHEDULE}; all delivered {caught_up:.2f} s after "
        f"the receiver came back"
    )
