"""How `taskq serve` holds a burst of waiting calls: each waits on the event loop, holding no thread,
while Flask's few threads serve everything else; and the lock-free Redis pool those threads share
(real Redis)."""

from __future__ import annotations

import threading

import httpx
import pytest

from taskq.connection import ThreadedPool, connect
from taskq.store import Store
from tests.support.clients import Client, inspected
from tests.support.env import PROVIDER_ENV, REAL_REDIS_URL
from tests.support.monitor import finish, raw_request, take, waiting
from tests.support.processes import Processes, start_intake


@pytest.mark.redis
def test_many_threads_share_the_threaded_pool_without_mixing_replies(real_redis: object) -> None:
    client = inspected(connect(REAL_REDIS_URL, threaded=True, max_connections=40))
    pool = client.connection_pool
    assert isinstance(pool, ThreadedPool)
    wrong: list[str] = []

    def work(n: int) -> None:
        for i in range(50):
            key = f"pool:{n}:{i}"
            client.set(key, key)
            got = client.pipeline(transaction=False).get(key).incr(f"pool:{n}").execute()
            if got != [key, i + 1]:
                wrong.append(f"{key}: {got}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wrong == []
    assert not pool._in_use_connections, "every connection came back"
    assert len(pool._available_connections) == pool._created_connections <= 32
    client.close()


@pytest.mark.redis
@pytest.mark.slow
def test_waiting_calls_hold_no_thread_the_intake_answers_other_requests_meanwhile(
    procs: Processes, real_redis: Client
) -> None:
    env = {"TASKQ_REDIS_URL": REAL_REDIS_URL, "TASKQ_LOG_LEVEL": "WARNING", **PROVIDER_ENV}
    base = start_intake(procs, env, workers=1, threads=2)  # two threads for Flask's paths
    store = Store(real_redis)
    org_id, key = store.create_org("many", credits=10_000, concurrency=500, queue_limit=1000)
    waiting_calls = [raw_request(base, key, {"prompt": f"call {i}", "country": "US"}) for i in range(150)]
    waiting(lambda: int(store.org_fields(org_id).get("q11", 0)) == 150)
    answers: list[int] = []

    def get() -> None:
        with httpx.Client(timeout=30) as http:
            answers.append(http.get(base + "/v1/async/status", headers={"Authorization": f"Bearer {key}"})
                           .status_code)  # fmt: skip

    burst = [threading.Thread(target=get) for _ in range(60)]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join(60)
    assert answers == [200] * 60, "150 waiting calls, and Flask's two threads still serve everything else"
    while tasks := take(store, org_id, k=64):
        for task in tasks:
            assert finish(store, task, {"text": task.id, "sources": []})
    for sock in waiting_calls:
        sock.settimeout(30)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        sock.close()
    c = store.org_fields(org_id)
    assert int(c["credits"]) == 10_000 - 150 * 7 and int(c["reserved"]) == 0
