"""Webhook endpoints: a task's delivery history and redelivery, with org isolation."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from taskq.api import create_app
from taskq.api import webhooks as webhook_api
from taskq.store import Store
from tests.support.clients import Client
from tests.support.deliveries import deliver_until, finish_task, states
from tests.support.orgs import auth
from tests.support.receiver import Receiver, receiving
from tests.support.settings import make_settings


def client_for(application: Any) -> Any:
    if "webhooks" not in application.blueprints:  # until create_app registers it
        application.register_blueprint(webhook_api.bp)
    return application.test_client()


@pytest.fixture
def wh_http(app: Any) -> Any:
    return client_for(app)


# On fakeredis and on the real Redis ----------------------------------------------------------------
def test_other_orgs_and_unknown_tasks_are_not_found(wh_http: Any, store: Store, make_org: Any) -> None:
    owner, _ = make_org()
    _, intruder_key = make_org()
    task_id, _ = finish_task(store, owner, "https://hooks.example.com/x")
    for other in (task_id, str(uuid.uuid4()), "not-a-uuid"):
        for r in (
            wh_http.get(f"/v1/async/task/{other}/deliveries", headers=auth(intruder_key)),
            wh_http.post(f"/v1/async/task/{other}/webhook/redeliver", headers=auth(intruder_key)),
        ):
            assert r.status_code == 404, r.json
            assert r.json["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert wh_http.get(f"/v1/async/task/{task_id}/deliveries").status_code == 401


def test_redeliver_refuses_unfinished_tasks_and_tasks_without_a_webhook(
    wh_http: Any, store: Store, make_org: Any
) -> None:
    org_id, key = make_org()
    queued, _ = finish_task(store, org_id, "https://hooks.example.com/x", status="QUEUED")
    silent, _ = finish_task(store, org_id, None)
    r = wh_http.post(f"/v1/async/task/{queued}/webhook/redeliver", headers=auth(key))
    assert r.status_code == 409 and r.json["error"]["code"] == "VALIDATION_ERROR"
    assert "QUEUED" in r.json["error"]["message"]
    r = wh_http.post(f"/v1/async/task/{silent}/webhook/redeliver", headers=auth(key))
    assert r.status_code == 409 and "without a webhook" in r.json["error"]["message"]
    got = wh_http.get(f"/v1/async/task/{silent}/deliveries", headers=auth(key))
    assert got.json == {"taskId": silent, "webhook": None, "deliveries": []}


def test_redeliveries_of_one_task_are_capped(wh_http: Any, store: Store, make_org: Any) -> None:
    org_id, key = make_org()
    task_id, _ = finish_task(store, org_id, "https://hooks.example.com/x")
    codes = [
        wh_http.post(f"/v1/async/task/{task_id}/webhook/redeliver", headers=auth(key)).status_code
        for _ in range(20)
    ]
    assert codes == [200] * 19 + [409]
    listed = wh_http.get(f"/v1/async/task/{task_id}/deliveries", headers=auth(key)).json
    assert len(listed["deliveries"]) == 20 and listed["webhook"]["state"] == "pending"


# Through the delivery loop (real Redis) ------------------------------------------------------------
@pytest.mark.redis
def test_deliveries_lists_every_attempt_and_redeliver_sends_the_same_event_again(
    real_redis: Client,
) -> None:
    settings = make_settings("webhooks")
    http = client_for(create_app(settings, client=real_redis))
    store = Store(real_redis)
    org_id, key = store.create_org("hooks", credits=10, concurrency=1, queue_limit=10)

    async def run() -> tuple[str, str, str, Receiver]:
        async with receiving(store.webhook_secrets(org_id)) as rx:
            task_id, first = finish_task(store, org_id, rx.base + "/flaky/1")
            await deliver_until(settings, lambda: states(real_redis, store, org_id, [first]) == ["delivered"])
            r = http.post(f"/v1/async/task/{task_id}/webhook/redeliver", headers=auth(key))
            assert r.status_code == 200, r.json
            assert r.json["success"] is True and r.json["eventId"] == "msg_" + task_id
            second = r.json["deliveryId"]
            assert (
                http.get(f"/v1/async/task/{task_id}", headers=auth(key)).json["webhook"]["delivered"] is True
            )
            await deliver_until(
                settings, lambda: states(real_redis, store, org_id, [second]) == ["delivered"]
            )
            return task_id, first, second, rx

    task_id, first, second, rx = asyncio.run(run())
    assert [h.headers["webhook-id"] for h in rx.hits] == ["msg_" + task_id] * 3
    assert rx.hits[0].body == rx.hits[1].body == rx.hits[2].body
    assert all(h.verified for h in rx.hits)

    listed = http.get(f"/v1/async/task/{task_id}/deliveries", headers=auth(key)).json
    assert listed["taskId"] == task_id
    webhook = listed["webhook"]
    assert webhook["url"].endswith("/flaky/1") and webhook["delivered"] is True
    assert (
        webhook["state"] == "delivered" and webhook["attempts"] == 3 and webhook["deliveredAt"].endswith("Z")
    )
    one, two = listed["deliveries"]
    assert (one["deliveryId"], two["deliveryId"]) == (first, second)
    assert one["eventId"] == two["eventId"] == "msg_" + task_id
    assert one["state"] == two["state"] == "delivered" and one["nextAttemptAt"] is None
    assert [(a["attempt"], a["statusCode"], a["error"], a["outcome"]) for a in one["attempts"]] == [
        (1, 500, "HTTP 500", "retry"),
        (2, 200, None, "delivered"),
    ]
    assert [a["outcome"] for a in two["attempts"]] == ["delivered"]
    assert all(a["at"].endswith("Z") and a["durationMs"] >= 0 for a in one["attempts"] + two["attempts"])
