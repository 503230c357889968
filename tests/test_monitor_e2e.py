"""Synchronous monitor calls end to end: a real drain and the provider simulator answer every monitor
path; a client that disconnects from `taskq serve` cancels its call, queued or running, uncharged."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from taskq.settings import Settings
from taskq.store import Store
from taskq.worker.drain import drain
from tests.support.clients import Client
from tests.support.env import PROVIDER_ENV, REAL_REDIS_URL
from tests.support.intake import ServedIntake
from tests.support.monitor import raw_request
from tests.support.orgs import auth
from tests.support.processes import Processes, start_intake
from tests.support.settings import make_settings
from tests.support.upstream import Upstream
from tests.support.waits import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

T = TypeVar("T")

BODIES: dict[str, dict[str, Any]] = {
    "chatgpt": {"prompt": "Which vector databases support hybrid search?", "country": "US",
                "include": {"markdown": True}},
    "gemini": {"prompt": "Wie funktioniert RAG?", "country": "DE"},
    "grok": {"prompt": "What happened in AI this week?", "country": "US"},
    "copilot": {"prompt": "explain fencing tokens", "country": "US"},
    "perplexity": {"prompt": "Best open-source task queues", "country": "GB"},
    "aimode": {"prompt": "cheap flights to lisbon", "gl": "pt"},
    "google": {"query": "redis sorted set priority queue", "country": "US", "pages": 2},
    "google/news": {"query": "ai regulation", "country": "FR", "hl": "fr"},
}  # fmt: skip


def with_drain(
    settings: Settings, action: Callable[[], T], *, concurrency: int = 50, timeout: float = 90
) -> T:
    """Run action() on a thread while a drain runs on this one (it needs the main thread for its
    signal handlers); stop the drain when the action is done and return its result."""
    box: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            box.append(action())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)

    async def main() -> None:
        stop = asyncio.Event()
        job = asyncio.create_task(drain(settings, concurrency=concurrency, seconds=timeout, stop=stop))
        thread.start()
        end = asyncio.get_running_loop().time() + timeout
        while thread.is_alive() and asyncio.get_running_loop().time() < end and not job.done():
            await asyncio.sleep(0.02)
        stop.set()
        await job

    asyncio.run(main())
    thread.join(30)
    if failed:
        raise failed[0]
    assert box, "the action did not finish while the drain ran"
    return box[0]


@pytest.fixture
def sim() -> Iterator[Upstream]:
    with Upstream("0.01", simulator=True) as server:
        yield server


def post_all(intake: ServedIntake, key: str, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """The calls at once, each on its own thread; their responses in order."""
    out: list[Any] = [None] * len(calls)

    def one(i: int, path: str, body: dict[str, Any]) -> None:
        out[i] = intake.post(f"/v1/monitor/{path}", body, key)

    threads = [threading.Thread(target=one, args=(i, p, b)) for i, (p, b) in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return out


def test_every_monitor_path_answers_the_normalized_result_through_a_worker(
    sim: Upstream, real_redis: Client, make_intake: Any
) -> None:
    cfg = make_settings("drain", upstream=sim.url)
    intake = make_intake(cfg)
    store = Store(real_redis)
    org, key = store.create_org("sync", credits=1000, concurrency=20, queue_limit=1000)
    answers = with_drain(cfg, lambda: post_all(intake, key, list(BODIES.items())))
    charged = 0
    for path, got in zip(BODIES, answers, strict=True):
        assert got is not None and got.status_code == 200, (path, got and got.json())
        assert got.json()["success"] is True, path
        result = got.json()["result"]
        listed = result.get("organicResults") or result.get("newsResults") or []
        assert result.get("text") or listed, (path, result)
        assert int(got.headers["X-Credits-Charged"]) > 0
        charged += int(got.headers["X-Credits-Charged"])
    chatgpt = answers[0].json()["result"]
    assert chatgpt["markdown"] and chatgpt["sources"][0]["url"].startswith("http"), (
        "include.markdown honoured"
    )
    assert "markdown" not in answers[1].json()["result"], "and only when asked"
    # sync price = base + 2; Google pages=2 adds 2
    expected = sum(cfg.price(t) + 2 for t in ("CHATGPT", "GEMINI", "GROK", "COPILOT", "PERPLEXITY", "AIMODE",
                                              "GOOGLE", "GOOGLE_NEWS")) + 2  # fmt: skip
    assert charged == expected
    fields = store.org_fields(org)
    assert int(fields["credits"]) == 1000 - expected and int(fields["reserved"]) == 0
    assert int(fields["inflight"]) == 0 and int(fields.get("q11", 0)) == 0


def test_a_retried_call_succeeds_and_a_rejected_one_is_500_uncharged(
    sim: Upstream, real_redis: Client, make_intake: Any
) -> None:
    cfg = make_settings("drain", upstream=sim.url)
    intake = make_intake(cfg)
    org, key = Store(real_redis).create_org("sync", credits=100, concurrency=20, queue_limit=1000)
    calls = [("chatgpt", {"prompt": "retry me [sim:503-once:sync-e2e]", "country": "US"}),
             ("perplexity", {"prompt": "refused [sim:400]", "country": "US"})]  # fmt: skip
    retried, rejected = with_drain(cfg, lambda: post_all(intake, key, calls))
    assert retried.status_code == 200 and retried.json()["result"]["text"]
    assert rejected.status_code == 500, rejected.text
    error = rejected.json()["error"]
    assert error["code"] == "INTERNAL_SERVER_ERROR" and error["details"]["reason"] == "PROVIDER_REJECTED"
    assert "X-Credits-Charged" not in rejected.headers
    assert int(Store(real_redis).org_fields(org)["credits"]) == 100 - 7


def test_no_attempt_starts_after_the_deadline(sim: Upstream, real_redis: Client, make_intake: Any) -> None:
    """A call that keeps failing is retried until its deadline and then answered 500 at once."""
    cfg = make_settings("drain", upstream=sim.url, sync_timeout_seconds=1.5, max_attempts=100,
                        retry_base_seconds=0.3, retry_max_seconds=0.3)  # fmt: skip
    intake = make_intake(cfg)
    org, key = Store(real_redis).create_org("sync", credits=100, concurrency=20, queue_limit=1000)
    started = time.monotonic()
    [got] = with_drain(
        cfg, lambda: post_all(intake, key, [("gemini", {"prompt": "down [sim:503]", "country": "US"})])
    )
    took = time.monotonic() - started
    assert (
        got.status_code == 500 and got.json()["error"]["message"] == "Maximum timeout (1.5 seconds) exceeded"
    )
    assert took < 10, "answered at its deadline, not after max_attempts"
    fields = Store(real_redis).org_fields(org)
    assert (int(fields["credits"]), int(fields["reserved"]), int(fields["inflight"])) == (100, 0, 0)


def test_a_client_that_disconnects_cancels_its_call_queued_or_running_and_is_not_charged(
    procs: Processes, real_redis: Client
) -> None:
    with Upstream("1.5", simulator=True) as slow:
        env = {"TASKQ_REDIS_URL": REAL_REDIS_URL, "TASKQ_UPSTREAM_BASE_URL": slow.url,
               "TASKQ_LOG_LEVEL": "WARNING", **PROVIDER_ENV}  # fmt: skip
        base = start_intake(procs, env, workers=1)
        store = Store(real_redis)
        org_id, key = store.create_org("gone", credits=100, concurrency=10, queue_limit=100)
        okey = store.org(org_id).shard.org(org_id)

        def field(name: str) -> int:
            return int(real_redis.hget(okey, name) or 0)

        # Queued (no worker yet): canceled at once.
        queued = raw_request(base, key, {"prompt": "nobody takes me", "country": "US"})
        wait_for(lambda: field("q11") == 1, 20, "the call to be admitted")
        assert field("reserved") == 7
        queued.close()
        wait_for(lambda: field("q11") == 0 and field("reserved") == 0, 20, "the queued call to be canceled")

        # Running: canceled when its provider call ends (its next safe point), not charged.
        def leave_while_running() -> None:
            running = raw_request(base, key, {"prompt": "slow answer", "country": "US"})
            wait_for(lambda: field("inflight") == 1, 20, "a worker to take the call")
            running.close()
            wait_for(lambda: field("inflight") == 0, 20, "the running call to end")

        with_drain(make_settings("drain", upstream=slow.url), leave_while_running)
        assert (field("credits"), field("reserved"), field("q11")) == (100, 0, 0)
        statuses = [str(real_redis.hget(k, "status")) for k in real_redis.scan_iter("tq:*:t:*") if
                    real_redis.type(k) == "hash"]  # fmt: skip
        assert sorted(statuses) == ["CANCELED", "CANCELED"], statuses
        # the intake is fine and answers the next call
        got = with_drain(
            make_settings("drain", upstream=slow.url),
            lambda: httpx.post(
                base + "/v1/monitor/chatgpt",
                json={"prompt": "hi", "country": "US"},
                headers=auth(key),
                timeout=30,
            ),
        )
        assert got.status_code == 200 and got.headers["X-Credits-Charged"] == "7"
