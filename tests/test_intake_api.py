"""The async-task API: create, batch, read, status, clear, credits — on fakeredis and on a real Redis."""

from __future__ import annotations

import re
from typing import Any

import pytest

from taskq.store import Store
from tests.support.orgs import auth

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def task(prompt: str = "What is taskq?", **extra: Any) -> dict[str, Any]:
    return {"taskType": "CHATGPT", "payload": {"prompt": prompt, "country": "US"}, **extra}


def test_create_task_returns_queued_task_with_credits(http: Any, make_org: Any) -> None:
    _, key = make_org()
    r = http.post("/v1/async/task", json=task(priority=7, idempotencyKey="k1"), headers=auth(key))
    assert r.status_code == 200, r.json
    body = r.json
    assert body["success"] is True
    t = body["task"]
    assert t["status"] == "QUEUED" and t["priority"] == 7 and t["taskType"] == "CHATGPT"
    assert t["idempotencyKey"] == "k1" and t["latencyMs"] is None
    assert ISO_MS.match(t["createdAt"])
    assert body["credits"] == {"creditsToCharge": 5, "creditsCharged": None}

    got = http.get(f"/v1/async/task/{t['id']}", headers=auth(key))
    assert got.status_code == 200
    assert got.json["task"] == t
    assert "response" not in got.json and "webhook" not in got.json


def test_batch_reports_each_task_by_index_in_input_order(http: Any, make_org: Any) -> None:
    _, key = make_org()
    body = [task("a"), {"taskType": "CHATGPT", "payload": {"prompt": "b", "country": "us"}}, task("c")]
    r = http.post("/v1/async/task/batch", json=body, headers=auth(key))
    assert r.status_code == 200
    assert r.json["summary"] == {"total": 3, "succeeded": 2, "failed": 1}
    results = r.json["results"]
    assert [x["index"] for x in results] == [0, 1, 2]
    assert [x["success"] for x in results] == [True, False, True]
    err = results[1]["error"]
    assert err["code"] == "VALIDATION_ERROR"
    assert err["message"] == "Invalid task at index 1"
    assert err["details"]["errors"][0]["field"] == "payload.country"
    assert ISO_MS.match(err["timestamp"])


def test_duplicate_key_in_same_batch_is_rejected(http: Any, make_org: Any) -> None:
    _, key = make_org()
    r = http.post(
        "/v1/async/task/batch",
        json=[task(idempotencyKey="same"), task(idempotencyKey="same")],
        headers=auth(key),
    )
    results = r.json["results"]
    assert results[0]["success"] is True
    assert results[1]["error"]["code"] == "RESOURCE_ALREADY_EXISTS"
    assert results[1]["error"]["details"]["field"] == "idempotencyKey"


def test_reused_idempotency_key_is_409(http: Any, make_org: Any) -> None:
    _, key = make_org()
    assert http.post("/v1/async/task", json=task(idempotencyKey="x"), headers=auth(key)).status_code == 200
    r = http.post("/v1/async/task", json=task(idempotencyKey="x"), headers=auth(key))
    assert r.status_code == 409
    assert r.json["error"]["code"] == "RESOURCE_ALREADY_EXISTS"
    assert r.json["error"]["details"]["value"] == "x"


def test_credits_run_down_across_a_batch(http: Any, make_org: Any) -> None:
    _, key = make_org(credits=12)
    r = http.post("/v1/async/task/batch", json=[task("a"), task("b"), task("c")], headers=auth(key))
    codes = [x.get("error", {}).get("code") for x in r.json["results"]]
    assert codes == [None, None, "INSUFFICIENT_CREDITS"]
    assert http.get("/v1/credits", headers=auth(key)).json["remaining"] == 2


def test_single_task_without_credits_is_403(http: Any, make_org: Any) -> None:
    _, key = make_org(credits=1)
    r = http.post("/v1/async/task", json=task(), headers=auth(key))
    assert r.status_code == 403
    assert r.json["error"]["code"] == "INSUFFICIENT_CREDITS"


def test_queue_limit_rejects_the_whole_batch(http: Any, make_org: Any) -> None:
    _, key = make_org(queue_limit=3)
    assert http.post("/v1/async/task/batch", json=[task(), task()], headers=auth(key)).status_code == 200
    r = http.post("/v1/async/task/batch", json=[task(), task()], headers=auth(key))
    assert r.status_code == 429
    assert r.json["error"]["code"] == "QUEUE_LIMIT_EXCEEDED"
    assert r.json["error"]["details"] == {"limit": 3}
    assert http.get("/v1/async/status", headers=auth(key)).json["queuedTasks"] == 2


def test_status_breaks_down_priorities_descending(http: Any, make_org: Any) -> None:
    _, key = make_org()
    batch = [task(priority=2), task(priority=9), task(priority=9), task()]
    http.post("/v1/async/task/batch", json=batch, headers=auth(key))
    status = http.get("/v1/async/status", headers=auth(key)).json
    assert status["queuedTasks"] == 4 and status["processingTasks"] == 0
    assert status["priorityBreakdown"] == [
        {"priority": 9, "count": 2},
        {"priority": 2, "count": 1},
        {"priority": 1, "count": 1},
    ]
    assert status["concurrency"] == {"used": 0, "max": 100}


def test_clear_queue_releases_credits_and_idempotency_keys(http: Any, make_org: Any) -> None:
    _, key = make_org(credits=100)
    r = http.post("/v1/async/task/batch", json=[task(idempotencyKey="a"), task()], headers=auth(key))
    ids = [x["task"]["id"] for x in r.json["results"]]
    assert http.get("/v1/credits", headers=auth(key)).json["remaining"] == 90
    cleared = http.delete("/v1/async/queue", headers=auth(key))
    assert cleared.json == {"success": True, "cleared": 2}
    assert http.get("/v1/credits", headers=auth(key)).json["remaining"] == 100
    assert http.get(f"/v1/async/task/{ids[0]}", headers=auth(key)).status_code == 404
    assert http.post("/v1/async/task", json=task(idempotencyKey="a"), headers=auth(key)).status_code == 200
    assert http.delete("/v1/async/queue", headers=auth(key)).json["cleared"] == 1
    assert http.delete("/v1/async/queue", headers=auth(key)).json["cleared"] == 0


def test_another_orgs_task_is_not_found(http: Any, make_org: Any) -> None:
    _, key_a = make_org()
    _, key_b = make_org()
    tid = http.post("/v1/async/task", json=task(), headers=auth(key_a)).json["task"]["id"]
    r = http.get(f"/v1/async/task/{tid}", headers=auth(key_b))
    assert r.status_code == 404
    assert r.json["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert http.delete("/v1/async/queue", headers=auth(key_b)).json["cleared"] == 0
    assert http.get("/v1/async/status", headers=auth(key_b)).json["queuedTasks"] == 0


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "MISSING_API_KEY"),
        ("bearer sk_live_" + "a" * 32, "MISSING_API_KEY"),
        ("Bearer sk_live_abc", "INVALID_API_KEY_FORMAT"),
        ("Bearer sk_live_" + "A" * 32, "INVALID_API_KEY_FORMAT"),
        ("Bearer sk_live_" + "a" * 32, "INVALID_OR_EXPIRED_API_KEY"),
    ],
)
def test_bad_keys_are_refused_with_their_code(http: Any, header: str | None, code: str) -> None:
    headers = {"Authorization": header} if header else {}
    r = http.get("/v1/async/status", headers=headers)
    assert r.status_code == 401
    assert r.json["error"]["code"] == code


def test_revoked_key_is_refused(http: Any, make_org: Any, store: Any) -> None:
    _, key = make_org()
    assert http.get("/v1/credits", headers=auth(key)).status_code == 200
    assert store.revoke_key(key)
    assert http.get("/v1/credits", headers=auth(key)).json["error"]["code"] == "INVALID_OR_EXPIRED_API_KEY"


def test_keys_are_stored_only_as_hashes(rclient: Any, make_org: Any) -> None:
    _, key = make_org()
    dump = " ".join(str(rclient.dump(k)) + k for k in rclient.keys("*"))
    assert key not in dump and key[8:] not in dump


def test_authenticated_responses_carry_rate_limit_headers(http: Any, make_org: Any) -> None:
    _, key = make_org()
    r = http.get("/v1/credits", headers=auth(key))
    assert r.headers["X-RateLimit-Limit"] == "1000"
    assert int(r.headers["X-RateLimit-Remaining"]) == 999


def test_health_and_readiness(http: Any) -> None:
    assert http.get("/healthz").json == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert "admit" in ready.json["scripts"]


@pytest.mark.redis
def test_admission_survives_the_server_losing_its_scripts(private_redis: Any, settings: Any) -> None:
    """A Redis restart or SCRIPT FLUSH empties the script cache: the next batch loads it and is admitted
    once (the script did not run on the NOSCRIPT answer), and the connection stays usable."""
    from taskq.api import create_app

    rclient, store = private_redis, Store(private_redis, settings.shards)
    http: Any = create_app(settings, client=rclient).test_client()
    org, key = store.create_org("test", credits=10_000, concurrency=100, queue_limit=100_000)
    first = http.post("/v1/async/task/batch", json=[task("a"), task("b")], headers=auth(key))
    assert first.status_code == 200 and first.json["summary"]["succeeded"] == 2
    rclient.script_flush()
    body = [task("c", idempotencyKey="once"), task("d", idempotencyKey="once")]
    r = http.post("/v1/async/task/batch", json=body, headers=auth(key))
    assert r.status_code == 200, r.json
    assert [x["success"] for x in r.json["results"]] == [True, False]
    assert r.json["results"][1]["error"]["details"]["taskId"] == r.json["results"][0]["task"]["id"]
    listed = http.get("/v1/async/task/" + r.json["results"][0]["task"]["id"], headers=auth(key))
    assert listed.status_code == 200 and listed.json["task"]["idempotencyKey"] == "once"
    assert store.org_fields(org)["queued"] == "3"
