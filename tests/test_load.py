"""Load: several clients submit batches to `taskq serve --workers 2` without pause while a worker drains.
No 5xx, the organization's queue limit is never passed (429 QUEUE_LIMIT_EXCEEDED answers are expected),
and the credits add up to the task records at the end.

Default (CI): 4 clients for 20 s. Full size: TASKQ_LOAD_SECONDS=60 TASKQ_LOAD_CLIENTS=8
pytest tests/test_load.py -s
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from taskq.store import Store
from tests.support.clients import Client
from tests.support.env import REAL_REDIS_URL, env_float, env_int
from tests.support.processes import Processes, start_intake, start_simulator, worker_env
from tests.support.tasks import org_counters, task_fields

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SECONDS = env_float("TASKQ_LOAD_SECONDS", 20.0)
CLIENTS = env_int("TASKQ_LOAD_CLIENTS", 4)
QUEUE_LIMIT = 300
CREDITS = 10_000_000
KINDS = [
    ("CHATGPT", {"prompt": "load", "country": "US"}),
    ("GEMINI", {"prompt": "load", "country": "DE"}),
    ("GOOGLE", {"query": "load", "country": "FR"}),
]


def client_loop(url: str, key: str, stop: threading.Event, seed: int, acked: list[str],
                answers: Counter[tuple[int, str]]) -> None:  # fmt: skip
    rng = random.Random(seed)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        while not stop.is_set():
            size = rng.randint(1, 60)
            body: list[dict[str, Any]] = []
            for _ in range(size):
                kind, payload = rng.choice(KINDS)
                body.append({"taskType": kind, "payload": payload, "priority": rng.randint(1, 10)})
            r = client.post("/v1/async/task/batch", json=body)
            data = r.json()
            answers[(r.status_code, "ok" if r.status_code == 200 else data["error"]["code"])] += 1
            if r.status_code == 200:
                assert data["summary"]["succeeded"] == size, data
                acked.extend(item["task"]["id"] for item in data["results"])


@pytest.mark.timeout(120 + int(SECONDS * 2))
def test_sustained_submission_keeps_limits_and_exact_credits(real_redis: Client, procs: Processes) -> None:
    store = Store(real_redis)
    org, key = store.create_org("load", credits=CREDITS, concurrency=1000, queue_limit=QUEUE_LIMIT)
    shard = store.org(org).shard
    sim = start_simulator(procs, "uniform:0.1,0.4")
    env = worker_env(REAL_REDIS_URL, sim, TASKQ_SHUTDOWN_GRACE_SECONDS="1")
    intake = start_intake(procs, env, workers=2)
    worker = procs.taskq("worker", ["worker", "--processes", "1", "--concurrency", "100"], env)

    stop = threading.Event()
    acked: list[str] = []
    answers: Counter[tuple[int, str]] = Counter()
    peak = 0

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, int(real_redis.hget(shard.org(org), "queued") or 0))
            time.sleep(0.002)

    threads = [threading.Thread(target=client_loop, args=(intake, key, stop, n, acked, answers), daemon=True)
               for n in range(CLIENTS)]  # fmt: skip
    threads.append(threading.Thread(target=watch, daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(SECONDS)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert procs.stop(worker) == 0  # SIGTERM: the drain releases its calls; some tasks stay queued

    records = task_fields(real_redis, shard, acked, ["status", "cost", "charged"])
    statuses = Counter(r[0] for r in records)
    charged = sum(int(r[2] or 0) for r in records if r[0] == "COMPLETED")
    reserved = sum(int(r[1]) for r in records if r[0] in ("QUEUED", "PROCESSING"))
    listed = set(real_redis.lrange(shard.org_tasks(org), 0, -1))
    credits = httpx.get(f"{intake}/v1/credits", headers={"Authorization": f"Bearer {key}"}).json()
    print(
        f"\nload: {CLIENTS} clients x {SECONDS:g} s: answers {dict(answers)}; {len(acked)} tasks admitted "
        f"({len(acked) / SECONDS:,.0f}/s), {dict(statuses)}; queue peak {peak} of limit {QUEUE_LIMIT}"
    )
    assert all(status < 500 for status, _ in answers), answers
    assert set(answers) <= {(200, "ok"), (429, "QUEUE_LIMIT_EXCEEDED")}, answers
    assert answers[(429, "QUEUE_LIMIT_EXCEEDED")] > 0 and answers[(200, "ok")] > 0
    assert 0 < peak <= QUEUE_LIMIT
    assert statuses["COMPLETED"] > 0 and set(statuses) <= {"COMPLETED", "QUEUED"}
    assert len(set(acked)) == len(acked) and listed == set(acked), "admitted without an answer, or lost"
    assert charged == sum(int(r[1]) for r in records if r[0] == "COMPLETED")
    assert credits["remaining"] == CREDITS - charged - reserved
    assert org_counters(real_redis, shard, org) == {
        "credits": CREDITS - charged, "reserved": reserved, "queued": statuses["QUEUED"], "inflight": 0
    }  # fmt: skip
