"""How `taskq serve` holds a burst of waiting calls: the intake's lock-free Redis pool shared by many
threads (real Redis), and the gunicorn worker whose pool threads all start with the process and
which accepts every waiting connection."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskq.connection import ThreadedPool, connect
from tests.support.clients import inspected
from tests.support.env import REAL_REDIS_URL
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


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path / "logs")
    yield processes
    processes.close()


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


@pytest.mark.redis
@pytest.mark.slow
def test_the_intake_starts_its_threads_up_front_and_answers_a_burst_of_connections(
    procs: Processes, real_redis: object
) -> None:
    base = start_intake(procs, {"TASKQ_REDIS_URL": REAL_REDIS_URL, "TASKQ_LOG_LEVEL": "WARNING"},
                        workers=1, threads=48)  # fmt: skip
    [intake] = procs.started
    children = []
    for task in os.listdir(f"/proc/{intake.pid}/task"):
        with open(f"/proc/{intake.pid}/task/{task}/children") as f:
            children += [int(pid) for pid in f.read().split()]
    [worker] = children
    assert threads_of(worker) >= 48, "every pool thread runs before the first request"
    answers: list[int] = []

    def get() -> None:
        with httpx.Client(timeout=30) as http:
            answers.append(http.get(base + "/healthz").status_code)

    burst = [threading.Thread(target=get) for _ in range(120)]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join(60)
    assert answers == [200] * 120
