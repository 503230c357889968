"""Delayed tasks (runAt, delaySeconds): QUEUED at once, counted and reserved, claimable only when due."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from taskq.admission import Accepted, admit
from taskq.scheduler import ALL_TYPES, claim
from taskq.schemas.tasks import epoch_ms
from taskq.store import Store
from tests.support.clients import Client
from tests.support.drain import run_drain, settled
from tests.support.env import REAL_REDIS_URL
from tests.support.orgs import auth
from tests.support.scheduler import Scheduler
from tests.support.settings import make_settings
from tests.support.tasks import counters, request
from tests.support.upstream import Upstream

CAPS: dict[str, int | None] = {t: None for t in ALL_TYPES}
TASK = {"taskType": "CHATGPT", "payload": {"prompt": "hi", "country": "US"}}


def take(store: Store, org: str, now: int, k: int = 10) -> list[str]:
    op = claim(store.org(org).shard, CAPS, now=now, lease_ms=30_000, k=k)
    return [t.id for t in Scheduler(store.client).run(op)]


def test_delayed_task_is_queued_reserved_and_shows_when_it_will_run(http: Any, make_org: Any) -> None:
    _, key = make_org(credits=100, queue_limit=2)
    before = int(time.time() * 1000)
    answer = http.post("/v1/async/task", json={**TASK, "delaySeconds": 30}, headers=auth(key)).json
    task = answer["task"]
    assert task["status"] == "QUEUED"
    due = epoch_ms(task["runAt"])
    assert before + 30_000 <= due <= int(time.time() * 1000) + 30_000
    shown = http.get(f"/v1/async/task/{task['id']}", headers=auth(key)).json["task"]
    assert shown["status"] == "QUEUED" and shown["runAt"] == task["runAt"]
    assert http.get("/v1/async/status", headers=auth(key)).json["queuedTasks"] == 1
    assert http.get("/v1/credits", headers=auth(key)).json["remaining"] == 95
    # It holds a place under the queue limit (2): a batch of two more is refused whole.
    refused = http.post("/v1/async/task/batch", json=[TASK, TASK], headers=auth(key))
    assert refused.status_code == 429


def test_run_at_is_claimable_from_that_time_on_not_before(store: Store, http: Any, make_org: Any) -> None:
    org, key = make_org()
    run_at = int(time.time() * 1000) + 3_600_000
    iso = datetime.fromtimestamp(run_at / 1000, UTC).isoformat()
    task = http.post("/v1/async/task", json={**TASK, "runAt": iso}, headers=auth(key)).json["task"]
    assert epoch_ms(task["runAt"]) == run_at
    assert take(store, org, now=run_at - 1) == []
    assert counters(store, org)["queued"] == 1
    assert take(store, org, now=run_at) == [task["id"]]
    c = counters(store, org)
    assert (c["queued"], c["inflight"]) == (0, 1)
    started = http.get(f"/v1/async/task/{task['id']}", headers=auth(key)).json["task"]
    assert started["status"] == "PROCESSING" and "runAt" not in started


def test_a_task_due_keeps_its_place_by_admission(store: Store, http: Any, make_org: Any) -> None:
    """Due, a delayed task goes before same-priority tasks admitted after it (it runs as soon as it may),
    and a delayed batch runs in its input order."""
    org, key = make_org(concurrency=1000)
    batch = [
        {**TASK, "delaySeconds": 60, "payload": {"prompt": f"p{i}", "country": "US"}} for i in range(150)
    ]
    delayed = http.post("/v1/async/task/batch", json=batch, headers=auth(key)).json["results"]
    later = http.post("/v1/async/task", json=TASK, headers=auth(key)).json["task"]
    due = max(epoch_ms(r["task"]["runAt"]) for r in delayed)
    taken = take(store, org, now=due, k=100) + take(store, org, now=due, k=100)  # 100 promoted per claim
    assert taken == [r["task"]["id"] for r in delayed] + [later["id"]]


def test_runat_in_the_past_runs_at_once(store: Store, http: Any, make_org: Any) -> None:
    org, key = make_org()
    task = http.post("/v1/async/task", json={**TASK, "runAt": "2020-01-01T00:00:00Z"}, headers=auth(key)).json
    assert "runAt" not in task["task"]
    assert take(store, org, now=int(time.time() * 1000)) == [task["task"]["id"]]


def test_canceling_a_delayed_task_releases_it(store: Store, http: Any, make_org: Any) -> None:
    org, key = make_org(credits=100)
    task = http.post("/v1/async/task", json={**TASK, "delaySeconds": 5}, headers=auth(key)).json["task"]
    answer = http.post(f"/v1/async/task/{task['id']}/cancel", headers=auth(key)).json
    assert answer["canceled"] is True and answer["task"]["status"] == "CANCELED"
    c = counters(store, org)
    assert (c["queued"], c["reserved"]) == (0, 0)
    assert store.client.zcard(store.org(org).shard.delayed) == 0
    assert take(store, org, now=epoch_ms(task["runAt"]) + 1) == []


def test_batch_mixes_delayed_and_immediate_tasks(store: Store, http: Any, make_org: Any) -> None:
    org, key = make_org()
    body = [TASK, {**TASK, "delaySeconds": 10}, {**TASK, "runAt": "2099-01-01T00:00:00Z"}]
    results = http.post("/v1/async/task/batch", json=body, headers=auth(key)).json["results"]
    assert [r["success"] for r in results] == [True, True, False]
    assert results[2]["error"]["details"]["errors"][0]["field"] == "runAt"
    assert "runAt" not in results[0]["task"] and "runAt" in results[1]["task"]
    assert take(store, org, now=int(time.time() * 1000)) == [results[0]["task"]["id"]]
    assert take(store, org, now=epoch_ms(results[1]["task"]["runAt"])) == [results[1]["task"]["id"]]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"runAt": "2026-05-01T10:00:00"}, "runAt"),  # no UTC offset
        ({"runAt": "tomorrow"}, "runAt"),
        ({"runAt": 1770000000}, "runAt"),
        ({"delaySeconds": -1}, "delaySeconds"),
        ({"delaySeconds": "5"}, "delaySeconds"),
        ({"delaySeconds": 400 * 86400}, "delaySeconds"),
        ({"delaySeconds": 5, "runAt": "2020-01-01T00:00:00Z"}, "delaySeconds"),
    ],
)
def test_bad_delays_are_refused_naming_the_field(
    http: Any, store: Store, make_org: Any, extra: dict[str, Any], field: str
) -> None:
    org, key = make_org()
    answer = http.post("/v1/async/task", json={**TASK, **extra}, headers=auth(key))
    assert answer.status_code == 400
    assert field in [e["field"] for e in answer.json["error"]["details"]]
    assert counters(store, org)["queued"] == 0


@pytest.mark.redis
def test_a_drain_claims_a_delayed_task_not_before_it_is_due(real_redis: Client) -> None:
    """A real drain idle on its wake list (5 s idle wait): the task starts once due, never before."""
    store = Store(real_redis)
    with Upstream() as upstream:
        cfg = make_settings(
            "worker", upstream=upstream.url, worker_idle_wait_seconds=5.0, redis_url=REAL_REDIS_URL
        )
        org = store.create_org("d", credits=100, concurrency=10, queue_limit=10)[0]
        item = request()
        item.delay_ms = 1500
        outcome = admit(store, cfg, store.org(org), [item])[0]
        assert isinstance(outcome, Accepted)
        stats = run_drain(cfg, settled(store, org), timeout=30)
    key = store.org(org).shard.task(outcome.task["id"])
    created, begun = (int(str(x)) for x in real_redis.hmget(key, ["created", "started"]))
    assert begun - created >= 1500, "claimed before it was due"
    assert stats["claimed"] == 1 and real_redis.hget(key, "status") == "COMPLETED"
