"""Batches through their life: cancel (task and batch), completion counts, batch.completed, retry-failed,
and the metrics the scheduler counts — driven through the real admission and scheduler scripts."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from taskq import deliveries, scheduler
from taskq.errors import Code
from taskq.schemas.tasks import TaskType
from tests.support.orgs import auth
from tests.support.scheduler import Scheduler

CAPS: dict[str, int | None] = {t.value: None for t in TaskType}


def task(prompt: str = "x", **extra: Any) -> dict[str, Any]:
    return {"taskType": "GEMINI", "payload": {"prompt": prompt, "country": "US"}, **extra}


def claim_all(rclient: Any, store: Any, org_id: str, k: int = 50) -> list[scheduler.Claimed]:
    shard = store.org(org_id).shard
    now = int(time.time() * 1000)
    return Scheduler(rclient).run(scheduler.claim(shard, CAPS, now=now, lease_ms=30_000, k=k))


def now_ms() -> int:
    return int(time.time() * 1000)


def test_cancel_a_queued_task_releases_credits_and_counts_in_its_batch(
    http: Any, make_org: Any, store: Any
) -> None:
    org_id, key = make_org(credits=100)
    body = http.post("/v1/async/task/batch", json=[task("a"), task("b")], headers=auth(key)).json
    first = body["results"][0]["task"]["id"]
    r = http.post(f"/v1/async/task/{first}/cancel", headers=auth(key))
    assert r.status_code == 200
    assert r.json["canceled"] is True and r.json["task"]["status"] == "CANCELED"
    assert r.json["response"]["error"]["code"] == "TASK_CANCELED"
    assert r.json["credits"]["creditsCharged"] == 0
    assert http.get("/v1/credits", headers=auth(key)).json["remaining"] == 96
    assert http.get("/v1/async/status", headers=auth(key)).json["queuedTasks"] == 1
    again = http.post(f"/v1/async/task/{first}/cancel", headers=auth(key))
    assert again.status_code == 409 and again.json["error"]["code"] == "TASK_ALREADY_FINISHED"
    batch = http.get(f"/v1/async/batch/{body['batchId']}", headers=auth(key)).json
    assert batch["counts"]["CANCELED"] == 1 and batch["counts"]["QUEUED"] == 1
    claimed = claim_all(store.client, store, org_id)
    assert [c.id for c in claimed] == [body["results"][1]["task"]["id"]]


def test_cancel_of_another_orgs_task_is_404(http: Any, make_org: Any) -> None:
    _, key_a = make_org()
    _, key_b = make_org()
    tid = http.post("/v1/async/task", json=task(), headers=auth(key_a)).json["task"]["id"]
    assert http.post(f"/v1/async/task/{tid}/cancel", headers=auth(key_b)).status_code == 404
    assert http.get(f"/v1/async/task/{tid}", headers=auth(key_a)).json["task"]["status"] == "QUEUED"


def test_cancel_while_processing_happens_at_the_next_retry(http: Any, make_org: Any, store: Any) -> None:
    org_id, key = make_org(credits=100)
    tid = http.post("/v1/async/task", json=task(), headers=auth(key)).json["task"]["id"]
    (held,) = claim_all(store.client, store, org_id)
    r = http.post(f"/v1/async/task/{tid}/cancel", headers=auth(key)).json
    assert r["canceled"] is False and r["cancelRequested"] is True and r["task"]["status"] == "PROCESSING"
    assert Scheduler(store.client).run(scheduler.retry(held, due=now_ms(), now=now_ms(), retention=60))
    got = http.get(f"/v1/async/task/{tid}", headers=auth(key)).json
    assert got["task"]["status"] == "CANCELED"
    assert http.get("/v1/credits", headers=auth(key)).json["remaining"] == 100
    assert http.get("/v1/async/status", headers=auth(key)).json == {
        "queuedTasks": 0,
        "processingTasks": 0,
        "priorityBreakdown": [],
        "concurrency": {"used": 0, "max": 100},
    }


IDLE_STATUS = {"queuedTasks": 0, "processingTasks": 0, "priorityBreakdown": [],
               "concurrency": {"used": 0, "max": 100}}  # fmt: skip


@pytest.mark.parametrize("safe_point", ["release", "expired lease"])
def test_cancel_while_processing_happens_when_the_task_is_released_or_its_lease_expires(
    http: Any, make_org: Any, store: Any, safe_point: str
) -> None:
    """A worker that stops (release) or dies (its lease is reaped) does not put a task whose cancel
    was requested back in line: it would run again after the client was told it would not."""
    org_id, key = make_org(credits=100)
    tid = http.post("/v1/async/task", json=task(), headers=auth(key)).json["task"]["id"]
    (held,) = claim_all(store.client, store, org_id)
    assert http.post(f"/v1/async/task/{tid}/cancel", headers=auth(key)).json["cancelRequested"] is True
    sched = Scheduler(store.client)
    if safe_point == "release":
        assert sched.run(scheduler.release(held, now=now_ms(), retention=60))
    else:
        shard = store.org(org_id).shard
        reaped = sched.run(scheduler.reap(shard, now=now_ms() + 60_000, max_attempts=5, retention=60))
        assert (reaped.requeued, reaped.exhausted) == (0, [])
    got = http.get(f"/v1/async/task/{tid}", headers=auth(key)).json
    assert got["task"]["status"] == "CANCELED"
    assert got["response"]["error"]["code"] == "TASK_CANCELED"
    assert http.get("/v1/credits", headers=auth(key)).json["remaining"] == 100
    assert http.get("/v1/async/status", headers=auth(key)).json == IDLE_STATUS
    assert claim_all(store.client, store, org_id) == []  # nothing left to run


@pytest.mark.redis
def test_cancel_racing_claims_either_cancels_or_runs_never_both(
    real_redis: Any, app: Any, make_org: Any, store: Any
) -> None:
    org_id, key = make_org(credits=10_000)
    http = app.test_client()
    ids = [
        x["task"]["id"]
        for x in http.post(
            "/v1/async/task/batch", json=[task(str(i)) for i in range(200)], headers=auth(key)
        ).json["results"]
    ]
    claimed: list[str] = []
    verdicts: dict[str, str] = {}

    def claimer() -> None:
        while len(claimed) < 200:
            got = claim_all(real_redis, store, org_id, k=5)
            if not got and len(claimed) + sum(v == "canceled" for v in verdicts.values()) >= 200:
                return
            claimed.extend(c.id for c in got)

    def canceller() -> None:
        for chunk in range(0, 200, 10):
            part = ids[chunk : chunk + 10]
            verdicts.update(
                zip(part, scheduler.cancel(store, store.org(org_id), part, retention=60), strict=True)
            )

    threads = [threading.Thread(target=claimer), threading.Thread(target=canceller)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    canceled = {i for i, v in verdicts.items() if v == "canceled"}
    assert canceled.isdisjoint(claimed)
    assert canceled | set(claimed) == set(ids)
    assert all(verdicts[i] == "requested" for i in claimed)


def test_batch_completes_with_counts_and_one_batch_webhook(http: Any, make_org: Any, store: Any) -> None:
    org_id, key = make_org(credits=100)
    body = http.post(
        "/v1/async/task/batch?batchWebhook=https://93.184.215.14/hooks",
        json=[task("a"), task("b"), task("c")],
        headers=auth(key),
    ).json
    shard = store.org(org_id).shard
    sched = Scheduler(store.client)
    a, b, c = claim_all(store.client, store, org_id)
    assert sched.run(scheduler.complete(a, {"text": "done"}, now=now_ms(), retention=60))
    assert sched.run(
        scheduler.fail(b, Code.PROVIDER_REJECTED, "Gemini returned 400", now=now_ms(), retention=60)
    )
    assert store.client.zcard(shard.wh_due) == 0, "no batch event before the last task"
    assert sched.run(scheduler.complete(c, {"text": "done"}, now=now_ms(), retention=60))
    view = http.get(f"/v1/async/batch/{body['batchId']}", headers=auth(key)).json
    assert view["status"] == "COMPLETED" and view["finishedAt"]
    assert view["counts"]["COMPLETED"] == 2 and view["counts"]["FAILED"] == 1
    assert view["creditsCharged"] == 8
    due = store.client.zrange(shard.wh_due, 0, -1)
    assert due == [f"batch_{body['batchId']}"]
    event = store.client.hgetall(shard.delivery(due[0]))
    assert event["event"] == f"msg_batch_{body['batchId']}" and event["url"] == "https://93.184.215.14/hooks"
    (claimed,), _ = sched.run(deliveries.claim_op(shard, now_ms(), now_ms() + 60_000, 10))
    payload = json.loads(claimed.body or "")
    assert payload["type"] == "batch.completed" and payload["batchId"] == body["batchId"]
    assert payload["counts"] == {"COMPLETED": 2, "FAILED": 1, "CANCELED": 0}
    assert payload["creditsCharged"] == 8 and payload["total"] == 3
    assert payload["finishedAt"] == view["finishedAt"] and payload["createdAt"] == view["createdAt"]


def test_retry_failed_resubmits_only_failed_tasks_as_a_new_batch(
    http: Any, make_org: Any, store: Any
) -> None:
    org_id, key = make_org(credits=100)
    body = http.post(
        "/v1/async/task/batch", json=[task("a", priority=3), task("b", idempotencyKey="k")], headers=auth(key)
    ).json
    a, b = claim_all(store.client, store, org_id)
    sched = Scheduler(store.client)
    sched.run(scheduler.complete(a, {"text": "ok"}, now=now_ms(), retention=60))
    sched.run(scheduler.fail(b, Code.PROVIDER_UNAVAILABLE, "Gemini returned 503", now=now_ms(), retention=60))
    r = http.post(f"/v1/async/batch/{body['batchId']}/retry-failed", headers=auth(key)).json
    assert r["sourceBatchId"] == body["batchId"] and r["batchId"] != body["batchId"]
    (item,) = r["results"]
    assert item["success"] and item["sourceIndex"] == 1 and item["sourceTaskId"] == b.id
    assert item["task"]["priority"] == 1 and item["task"]["idempotencyKey"] is None
    assert (
        http.get(f"/v1/async/task/{item['task']['id']}", headers=auth(key)).json["task"]["status"] == "QUEUED"
    )
    empty = http.post(f"/v1/async/batch/{r['batchId']}/retry-failed", headers=auth(key))
    assert empty.status_code == 422


def test_cancel_batch_cancels_the_rest(http: Any, make_org: Any, store: Any) -> None:
    org_id, key = make_org(credits=100)
    body = http.post("/v1/async/task/batch", json=[task(str(i)) for i in range(4)], headers=auth(key)).json
    (first,) = claim_all(store.client, store, org_id, k=1)
    Scheduler(store.client).run(scheduler.complete(first, {"text": "ok"}, now=now_ms(), retention=60))
    claim_all(store.client, store, org_id, k=1)
    r = http.post(f"/v1/async/batch/{body['batchId']}/cancel", headers=auth(key)).json
    assert (r["canceled"], r["cancelRequested"], r["alreadyFinished"]) == (2, 1, 1)
    _, other_key = make_org()
    assert http.post(f"/v1/async/batch/{body['batchId']}/cancel", headers=auth(other_key)).status_code == 404


def test_scheduler_counts_claims_outcomes_and_latency(
    http: Any, make_org: Any, store: Any, rclient: Any
) -> None:
    from taskq.metrics import totals

    org_id, key = make_org(credits=100)
    http.post("/v1/async/task/batch", json=[task("a"), task("b")], headers=auth(key))
    a, b = claim_all(rclient, store, org_id)
    sched = Scheduler(rclient)
    sched.run(scheduler.complete(a, {"text": "ok"}, now=now_ms(), retention=60))
    sched.run(
        scheduler.fail(b, Code.PROVIDER_REJECTED, "Gemini returned 400: bad", now=now_ms(), retention=60)
    )
    t = totals(rclient, 1)
    assert t["admitted"] == 2 and t["completed:GEMINI"] == 1 and t["failed:GEMINI:PROVIDER_REJECTED"] == 1
    assert sum(v for k, v in t.items() if k.startswith("lat:GEMINI:")) == 2
    failure = json.loads(rclient.lindex(store.org(org_id).shard.failures, 0))
    assert failure["id"] == b.id and failure["code"] == "PROVIDER_REJECTED"
