"""End to end through the provider simulator: every task type completes with real results; injected
429s are retried and succeed; injected 400s fail at once with the provider's message."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from taskq.flow import fingerprint
from taskq.store import Store
from tests.support.clients import Client
from tests.support.env import REAL_REDIS_URL
from tests.support.orgs import auth
from tests.support.receiver import Receiver
from tests.support.settings import make_settings
from tests.support.tasks import task_fields
from tests.support.upstream import Upstream

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TASKS: dict[str, dict[str, Any]] = {
    "CHATGPT": {"prompt": "Which vector databases support hybrid search?", "country": "US",
                "include": {"markdown": True}},
    "GEMINI": {"prompt": "Wie funktioniert RAG? ünïcödé", "country": "DE"},
    "PERPLEXITY": {"prompt": "Best open-source task queues", "country": "GB"},
    "GROK": {"prompt": "What happened in AI this week?", "country": "US"},
    "GOOGLE": {"query": "redis sorted set priority queue", "country": "US", "pages": 2},
    "GOOGLE_NEWS": {"query": "ai regulation", "country": "FR", "hl": "fr"},
    "AIMODE": {"prompt": "cheap flights to lisbon", "gl": "pt"},
    "COPILOT": {"prompt": "explain fencing tokens", "country": "US"},
}  # fmt: skip


@pytest.fixture
def simulator() -> Iterator[Upstream]:
    with Upstream(0.01, simulator=True) as sim:
        yield sim


#: Webhooks to the receiver on 127.0.0.1, each send allowed 30 s.
HOOKED = {"redis_url": REAL_REDIS_URL, "worker_idle_wait_seconds": 0.1,
          "webhook_allow_networks": ["127.0.0.0/8"], "webhook_timeout_seconds": 30.0}  # fmt: skip


def submit(
    app_settings: Any, real_redis: Client, tasks: list[dict[str, Any]]
) -> tuple[Any, str, str, list[str]]:
    from taskq.api import create_app

    http: Any = create_app(app_settings, client=real_redis).test_client()
    org_id, key = Store(real_redis).create_org("e2e", credits=10_000, concurrency=50, queue_limit=1000)
    body = http.post("/v1/async/task/batch", json=tasks, headers=auth(key)).json
    assert body["summary"]["failed"] == 0, body
    return http, key, org_id, [r["task"]["id"] for r in body["results"]]


def finished(http: Any, key: str, ids: list[str]) -> Any:
    return lambda: all(http.get(f"/v1/async/task/{i}", headers=auth(key)).json["task"]["status"]
                       in ("COMPLETED", "FAILED") for i in ids)  # fmt: skip


def test_every_task_type_completes_through_the_simulator(
    simulator: Upstream, real_redis: Client, drain: Any
) -> None:
    cfg = make_settings("drain", upstream=simulator.url, retry_max_seconds=0.3)
    tasks = [{"taskType": t, "payload": p, "priority": 1 + n} for n, (t, p) in enumerate(TASKS.items())]
    http, key, org, ids = submit(cfg, real_redis, tasks)
    drain(cfg, finished(http, key, ids), concurrency=20, timeout=60, org=org)
    for task_type, task_id in zip(TASKS, ids, strict=True):
        got = http.get(f"/v1/async/task/{task_id}", headers=auth(key)).json
        assert got["task"]["status"] == "COMPLETED", (task_type, got)
        result = got["response"]
        results = result.get("organicResults") or result.get("newsResults") or []
        assert result.get("text") or results, (task_type, result)
        assert result.get("sources") or results, (task_type, result)
        assert got["credits"]["creditsCharged"] == got["credits"]["creditsToCharge"] > 0
        assert got["task"]["latencyMs"] is not None and got["task"]["latencyMs"] >= 0
    chatgpt = http.get(f"/v1/async/task/{ids[0]}", headers=auth(key)).json["response"]
    assert "markdown" in chatgpt and chatgpt["sources"][0]["url"].startswith("http")


def test_injected_429_is_run_again_without_spending_an_attempt_and_400_fails_at_once(
    simulator: Upstream, real_redis: Client, drain: Any
) -> None:
    cfg = make_settings("drain", upstream=simulator.url, retry_max_seconds=0.3)
    tasks = [
        {"taskType": "CHATGPT", "payload": {"prompt": "retry me [sim:429-once:e2e-1]", "country": "US"}},
        {"taskType": "PERPLEXITY", "payload": {"prompt": "bad request [sim:400]", "country": "US"}},
    ]
    http, key, org, ids = submit(cfg, real_redis, tasks)
    drain(cfg, finished(http, key, ids), concurrency=5, timeout=60, org=org)
    retried = http.get(f"/v1/async/task/{ids[0]}", headers=auth(key)).json
    assert retried["task"]["status"] == "COMPLETED" and retried["response"]["text"]
    store = Store(real_redis)
    # The 429 paused the key and put the task back in line: the call that completed is its first attempt.
    assert real_redis.hget(store.org(org).shard.task(ids[0]), "attempts") == "1"
    assert real_redis.hget(store.org(org).shard.flow, "CHATGPT/" + fingerprint("sk-test") + ":n429") == "1"
    failed = http.get(f"/v1/async/task/{ids[1]}", headers=auth(key)).json
    assert failed["task"]["status"] == "FAILED" and failed["credits"]["creditsCharged"] == 0
    error = failed["response"]["error"]
    assert error["code"] == "PROVIDER_REJECTED" and "Perplexity" in error["message"], error
    assert real_redis.hget(store.org(org).shard.task(ids[1]), "attempts") == "1"


def test_a_hanging_receiver_does_not_slow_task_completion(
    simulator: Upstream, real_redis: Client, drain: Any
) -> None:
    with Receiver() as hook:
        cfg = make_settings(upstream=simulator.url, **HOOKED)  # every send hangs until its 30 s timeout
        tasks = [{"taskType": "GEMINI", "payload": {"prompt": f"q{i}", "country": "US"},
                  "webhook": {"url": hook.base + "/hang"}} for i in range(60)]  # fmt: skip
        http, key, org, ids = submit(cfg, real_redis, tasks)
        shard = Store(real_redis).org(org).shard
        all_done = finished(http, key, ids)
        attempts_when_done: list[int] = []

        def until() -> bool:
            if not attempts_when_done and all_done():
                recorded = task_fields(real_redis, shard, ids, ["wh_attempts"])
                attempts_when_done.append(sum(int(a or 0) for [a] in recorded))
            return bool(attempts_when_done) and bool(hook.hits)

        drain(cfg.model_copy(update={"shutdown_grace_seconds": 0.5}), until, concurrency=30, timeout=60,
              org=org)  # fmt: skip
        # Every task finished while no webhook attempt had ended: completion never waits on a send.
        assert attempts_when_done == [0]
        statuses = {http.get(f"/v1/async/task/{i}", headers=auth(key)).json["task"]["status"] for i in ids}
        assert statuses == {"COMPLETED"}
        assert hook.hits, "deliveries were attempted"


def test_batch_webhook_arrives_once_after_the_last_task_signed(
    simulator: Upstream, real_redis: Client, drain: Any
) -> None:
    from standardwebhooks import Webhook

    with Receiver() as hook:
        cfg = make_settings(upstream=simulator.url, **HOOKED)
        from taskq.api import create_app

        http: Any = create_app(cfg, client=real_redis).test_client()
        org_id, key = Store(real_redis).create_org("b", credits=10_000, concurrency=50, queue_limit=1000)
        tasks = [{"taskType": "CHATGPT", "payload": {"prompt": f"q{i}", "country": "US"}} for i in range(5)]
        tasks.append({"taskType": "CHATGPT", "payload": {"prompt": "no [sim:400]", "country": "US"}})
        body = http.post(f"/v1/async/task/batch?batchWebhook={hook.url}", json=tasks, headers=auth(key)).json
        ids = [r["task"]["id"] for r in body["results"]]
        secret = Store(real_redis).webhook_secrets(org_id)[0]

        def delivered() -> bool:
            return finished(http, key, ids)() and any(b'"batch.completed"' in h.body for h in hook.hits)

        drain(cfg, delivered, concurrency=10, timeout=60, org=org_id)
        batch_events = [(h.headers, h.body) for h in hook.hits if b'"batch.completed"' in h.body]
        assert len(batch_events) == 1
        headers, raw = batch_events[0]
        event = Webhook(secret).verify(raw, {k.lower(): v for k, v in headers.items()})
        assert event["batchId"] == body["batchId"] and event["counts"] == {
            "COMPLETED": 5,
            "FAILED": 1,
            "CANCELED": 0,
        }
        assert headers["webhook-id"] == f"msg_batch_{body['batchId']}"
        view = http.get(f"/v1/async/batch/{body['batchId']}", headers=auth(key)).json
        assert view["status"] == "COMPLETED" and view["counts"]["FAILED"] == 1
