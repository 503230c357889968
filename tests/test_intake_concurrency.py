"""Concurrent batches against one organization: never past the queue limit, credits or an idempotency key."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import pytest

from taskq.api import create_app
from taskq.store import Store
from tests.support.orgs import auth
from tests.support.settings import make_settings


@pytest.mark.redis
def test_concurrent_batches_never_overdraw_or_pass_limits(real_redis: Any) -> None:
    store = Store(real_redis)
    org_id, key = store.create_org("busy", credits=1000, concurrency=10, queue_limit=150)
    app = create_app(make_settings(), client=real_redis)
    admitted: list[dict[str, Any]] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        http: Any = app.test_client()
        for _ in range(10):
            batch = [
                {
                    "taskType": "CHATGPT",
                    "payload": {"prompt": f"q{seed}", "country": "US"},
                    "priority": rng.randint(1, 10),
                    "idempotencyKey": f"k{rng.randrange(120)}",
                }
                for _ in range(rng.randint(1, 20))
            ]
            r = http.post("/v1/async/task/batch", json=batch, headers=auth(key))
            with lock:
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    admitted.extend(x["task"] for x in r.json["results"] if x["success"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert set(statuses) <= {200, 429}
    assert 0 < len(admitted) <= 150
    keys = Counter(t["idempotencyKey"] for t in admitted)
    assert max(keys.values()) == 1, "an idempotency key was admitted twice"
    org = store.org(org_id)
    credits = store.credits(org)
    assert credits["remaining"] == 1000 - 5 * len(admitted) >= 0
    status = store.status(org)
    assert status["queuedTasks"] == len(admitted)
    assert sum(p["count"] for p in status["priorityBreakdown"]) == len(admitted)
    lanes = sum(real_redis.zcard(k) for k in real_redis.scan_iter(match=f"*:lane:{org_id}:*"))
    assert lanes == len(admitted)
