"""Webhook bodies the scripts do not build: a canceled task's and batch.completed are built in Python
when first claimed, from the stored task or batch, with the views of every other webhook body; the
attempt's record stores them, so every later attempt sends the same bytes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis
import redis.asyncio
import standardwebhooks
from aiohttp import web

from taskq import deliveries, scheduler
from taskq.api import create_app
from taskq.errors import Code
from taskq.keys import first_delivery
from taskq.schemas.tasks import TaskRecord, TaskType, event_view
from taskq.store import Store
from taskq.worker.webhook_loop import run_deliveries
from tests.support.env import REAL_REDIS_URL
from tests.support.orgs import auth
from tests.support.scheduler import Scheduler
from tests.support.settings import make_settings

CAPS: dict[str, int | None] = {t.value: None for t in TaskType}
HOOK = "https://93.184.215.14/hooks"


def task(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"taskType": "GEMINI", "payload": {"prompt": prompt, "country": "US"}, **extra}


def now_ms() -> int:
    return int(time.time() * 1000)


def claim_deliveries(client: Any, store: Any, org_id: str, now: int) -> list[deliveries.Claimed]:
    shard = store.org(org_id).shard
    claimed, _ = Scheduler(client).run(deliveries.claim_op(shard, now, now + 60_000, 10))
    return claimed


def record_retry(client: Any, store: Any, org_id: str, item: deliveries.Claimed, now: int) -> str:
    line = deliveries.log_line(now, item.attempt, 503, "HTTP 503", 5, "retry")
    op = deliveries.record_op(
        store.org(org_id).shard, item, "retry", now=now, next_ms=now, line=line, retention_seconds=60
    )
    return Scheduler(client).run(op)


def test_a_canceled_tasks_body_is_its_event_view_built_at_the_first_claim(
    http: Any, make_org: Any, store: Any
) -> None:
    org_id, key = make_org(credits=100)
    store.update_org(org_id, notify_canceled=1)
    tid = http.post("/v1/async/task", json=task("a", webhook={"url": HOOK}), headers=auth(key)).json["task"][
        "id"
    ]
    assert http.post(f"/v1/async/task/{tid}/cancel", headers=auth(key)).status_code == 200
    shard = store.org(org_id).shard
    assert "d_body" not in store.client.hgetall(shard.task(tid)), "the script stores no body"

    (item,) = claim_deliveries(store.client, store, org_id, now_ms())
    stored = TaskRecord.from_hash(tid, store.client.hgetall(shard.task(tid)))
    assert item.id == first_delivery(tid) and item.event == f"msg_{tid}" and item.built
    assert item.body == json.dumps(event_view(stored), separators=(",", ":"))
    body = json.loads(item.body or "")
    assert set(body) == {"task", "credits", "response"}
    assert body["task"]["id"] == tid and body["task"]["status"] == "CANCELED"
    assert body["task"]["latencyMs"] is None  # canceled while queued: it never started
    assert body["credits"] == {"creditsToCharge": stored.cost, "creditsCharged": 0}
    assert body["response"] == {
        "error": {"code": "TASK_CANCELED", "message": "The task was canceled by request"}
    }
    assert http.get(f"/v1/async/task/{tid}", headers=auth(key)).json["response"] == body["response"]

    assert record_retry(store.client, store, org_id, item, now_ms()) == "pending"
    assert store.client.hget(shard.task(tid), "d_body") == item.body
    (again,) = claim_deliveries(store.client, store, org_id, now_ms() + 1)
    assert again.body == item.body and again.event == item.event and not again.built
    assert again.attempt == 2


def test_a_task_canceled_while_running_reports_its_latency(http: Any, make_org: Any, store: Any) -> None:
    org_id, key = make_org(credits=100)
    store.update_org(org_id, notify_canceled=1)
    tid = http.post("/v1/async/task", json=task("a", webhook={"url": HOOK}), headers=auth(key)).json["task"][
        "id"
    ]
    shard = store.org(org_id).shard
    sched = Scheduler(store.client)
    (claimed,) = sched.run(scheduler.claim(shard, CAPS, now=now_ms(), lease_ms=30_000, k=5))
    assert http.post(f"/v1/async/task/{tid}/cancel", headers=auth(key)).json["cancelRequested"] is True
    ended = claimed.started_ms + 1234
    assert sched.run(
        scheduler.retry(claimed, due=ended, now=ended, retention=60, code=Code.PROVIDER_UNAVAILABLE)
    )

    (item,) = claim_deliveries(store.client, store, org_id, now_ms() + 2000)
    body = json.loads(item.body or "")
    assert body["task"]["status"] == "CANCELED" and body["task"]["latencyMs"] == 1234


def test_no_canceled_webhook_without_the_orgs_opt_in(http: Any, make_org: Any, store: Any) -> None:
    org_id, key = make_org(credits=100)
    tid = http.post("/v1/async/task", json=task("a", webhook={"url": HOOK}), headers=auth(key)).json["task"][
        "id"
    ]
    assert http.post(f"/v1/async/task/{tid}/cancel", headers=auth(key)).status_code == 200
    assert claim_deliveries(store.client, store, org_id, now_ms()) == []


def test_the_batch_body_is_built_once_and_outlives_the_batch_record(
    http: Any, make_org: Any, store: Any
) -> None:
    org_id, key = make_org(credits=100)
    body = http.post(
        f"/v1/async/task/batch?batchWebhook={HOOK}", json=[task("a"), task("b")], headers=auth(key)
    ).json
    batch_id = body["batchId"]
    first, second = (r["task"]["id"] for r in body["results"])
    assert http.post(f"/v1/async/task/{first}/cancel", headers=auth(key)).status_code == 200
    assert http.post(f"/v1/async/task/{second}/cancel", headers=auth(key)).status_code == 200
    view = http.get(f"/v1/async/batch/{batch_id}", headers=auth(key)).json
    shard = store.org(org_id).shard

    (item,) = claim_deliveries(store.client, store, org_id, now_ms())
    assert item.id == f"batch_{batch_id}" and item.event == f"msg_batch_{batch_id}" and item.built
    assert json.loads(item.body or "") == {
        "type": "batch.completed",
        "batchId": batch_id,
        "total": 2,
        "admitted": 2,
        "counts": {"COMPLETED": 0, "FAILED": 0, "CANCELED": 2},
        "creditsCharged": 0,
        "createdAt": view["createdAt"],
        "finishedAt": view["finishedAt"],
    }
    assert record_retry(store.client, store, org_id, item, now_ms()) == "pending"
    store.client.delete(shard.batch(batch_id))  # its retention ran out while the receiver was down
    (again,) = claim_deliveries(store.client, store, org_id, now_ms() + 1)
    assert again.body == item.body and not again.built


def test_a_batch_event_whose_batch_expired_before_its_first_claim_has_no_body(
    http: Any, make_org: Any, store: Any
) -> None:
    org_id, key = make_org(credits=100)
    body = http.post(f"/v1/async/task/batch?batchWebhook={HOOK}", json=[task("a")], headers=auth(key)).json
    tid = body["results"][0]["task"]["id"]
    assert http.post(f"/v1/async/task/{tid}/cancel", headers=auth(key)).status_code == 200
    store.client.delete(store.org(org_id).shard.batch(body["batchId"]))
    (item,) = claim_deliveries(store.client, store, org_id, now_ms())
    assert item.body is None and item.built


@pytest.mark.redis
def test_the_sender_signs_built_bodies_and_fails_an_event_it_cannot_build(real_redis: redis.Redis) -> None:
    store = Store(real_redis)
    org_id, key = store.create_org("bodies", credits=100, concurrency=5, queue_limit=100)
    store.update_org(org_id, notify_canceled=1)
    secret = store.webhook_secrets(org_id)[0]
    shard = store.org(org_id).shard
    settings = make_settings(webhook_allow_networks=["127.0.0.0/8"], webhook_schedule_seconds=[0.05])
    http = create_app(settings, client=real_redis).test_client()
    hits: list[tuple[dict[str, str], bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        hits.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        return web.Response(status=204)

    def cancel_one(url: str, path: str) -> str:
        submitted = http.post(path.format(url=url), json=[task("x", webhook={"url": url})], headers=auth(key))
        tid = submitted.json["results"][0]["task"]["id"]
        assert http.post(f"/v1/async/task/{tid}/cancel", headers=auth(key)).status_code == 200
        return str(submitted.json["batchId"])

    async def run() -> tuple[str, str]:
        app = web.Application()
        app.router.add_post("/hook", receive)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        sent = cancel_one(url, "/v1/async/task/batch?batchWebhook={url}")
        lost = cancel_one(url, "/v1/async/task/batch?batchWebhook={url}")
        real_redis.delete(shard.batch(lost))  # gone before the event's first send
        client = redis.asyncio.Redis.from_url(REAL_REDIS_URL, decode_responses=True)
        stop = asyncio.Event()
        loop = asyncio.create_task(run_deliveries(client, settings, stop))
        deadline = time.monotonic() + 30
        while (
            real_redis.zcard(shard.wh_due) + real_redis.zcard(shard.wh_proc) and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.02)
        stop.set()
        await loop
        await client.aclose()
        await runner.cleanup()
        return sent, lost

    sent, lost = asyncio.run(run())
    bodies = {json.loads(body).get("type", "task"): (headers, body) for headers, body in hits}
    assert sorted(bodies) == ["batch.completed", "task"] and len(hits) == 3  # two tasks' events, one batch
    for headers, body in hits:
        standardwebhooks.Webhook(secret).verify(body, headers)
        event = json.loads(body)
        if "task" in event:
            stored = real_redis.hget(shard.task(event["task"]["id"]), "d_body")
            assert headers["webhook-id"] == "msg_" + event["task"]["id"]
        else:
            stored = real_redis.hget(shard.delivery(f"batch_{sent}"), "body")
            assert headers["webhook-id"] == f"msg_batch_{sent}" and event["batchId"] == sent
        assert stored == body.decode()
    failed = deliveries.stored(real_redis, shard, f"batch_{lost}")
    assert failed["state"] == "failed" and "body" not in failed
    assert [json.loads(line)["outcome"] for line in deliveries.attempt_log(failed)] == ["blocked"]
