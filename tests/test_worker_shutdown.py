"""A stopping RQ worker ends its command listener (RQ's pubsub thread) at once, however it is scheduled."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from redis.client import PubSub

from taskq.worker.hosting import PUBSUB_STOP_SECONDS, DrainWorker
from tests.support.clients import Client
from tests.support.env import REAL_REDIS_URL

pytestmark = [pytest.mark.redis]


def test_unsubscribing_ends_the_listener_even_when_the_worker_loses_the_cpu_right_after(
    real_redis: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a loaded machine the listener thread reads the reply to the unsubscribe before the worker
    tells it to stop; it must end anyway (it used to poll on for a minute, holding the worker's exit)."""
    worker = DrainWorker([], connection=redis.Redis.from_url(REAL_REDIS_URL))
    worker.subscribe()
    wait_until(lambda: real_redis.pubsub_numsub(worker.pubsub_channel_name)[0][1] == 1)
    time.sleep(0.2)  # the listener is now blocked in its 60 s poll

    send = PubSub.unsubscribe

    def unsubscribe_then_lose_the_cpu(pubsub: PubSub, *args: Any) -> Any:
        sent = send(pubsub, *args)
        time.sleep(0.5)  # the listener gets the reply meanwhile
        return sent

    monkeypatch.setattr(PubSub, "unsubscribe", unsubscribe_then_lose_the_cpu)
    stopping = threading.Thread(target=worker.unsubscribe, daemon=True)
    started = time.monotonic()
    stopping.start()
    stopping.join(10)
    took = time.monotonic() - started
    assert not stopping.is_alive(), "unsubscribing did not return within 10 s"
    assert took < 0.5 + PUBSUB_STOP_SECONDS + 1, took
    assert worker.pubsub_thread is not None and not worker.pubsub_thread.is_alive()
    assert real_redis.pubsub_numsub(worker.pubsub_channel_name)[0][1] == 0


def wait_until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
