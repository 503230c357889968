"""Batches as resources and task listing (additive to the reference API)."""

from __future__ import annotations

import json
from typing import Any

from tests.support.clients import async_client
from tests.support.orgs import auth


def task(prompt: str = "x", **extra: Any) -> dict[str, Any]:
    return {"taskType": "GEMINI", "payload": {"prompt": prompt, "country": "US"}, **extra}


def test_batch_admission_returns_a_batch_id_and_the_batch_reads_back(http: Any, make_org: Any) -> None:
    _, key = make_org()
    r = http.post(
        "/v1/async/task/batch", json=[task("a"), {"bad": 1}, task("c", priority=3)], headers=auth(key)
    )
    batch_id = r.json["batchId"]
    ids = [x.get("task", {}).get("id") for x in r.json["results"]]
    b = http.get(f"/v1/async/batch/{batch_id}", headers=auth(key)).json
    assert b["batchId"] == batch_id and b["total"] == 3 and b["admitted"] == 2
    assert b["taskIds"] == ids
    assert b["counts"]["QUEUED"] == 2 and b["counts"]["COMPLETED"] == 0
    assert b["creditsCharged"] == 0 and b["finishedAt"] is None and b["status"] == "IN_PROGRESS"


def test_another_orgs_batch_is_404(http: Any, make_org: Any) -> None:
    _, key_a = make_org()
    _, key_b = make_org()
    batch_id = http.post("/v1/async/task/batch", json=[task()], headers=auth(key_a)).json["batchId"]
    for path in (f"/v1/async/batch/{batch_id}", f"/v1/async/batch/{batch_id}/results"):
        r = http.get(path, headers=auth(key_b))
        assert r.status_code == 404 and r.json["error"]["code"] == "RESOURCE_NOT_FOUND"


def test_results_of_an_unfinished_batch_are_empty_json_lines(http: Any, make_org: Any) -> None:
    _, key = make_org()
    batch_id = http.post("/v1/async/task/batch", json=[task()], headers=auth(key)).json["batchId"]
    r = http.get(f"/v1/async/batch/{batch_id}/results", headers=auth(key))
    assert r.status_code == 200 and r.mimetype == "application/x-ndjson" and r.data == b""


def test_finished_results_stream_as_json_lines_paged_by_cursor(
    http: Any, make_org: Any, rclient: Any, store: Any
) -> None:
    org_id, key = make_org()
    body = http.post("/v1/async/task/batch", json=[task(str(i)) for i in range(5)], headers=auth(key)).json
    ids = [x["task"]["id"] for x in body["results"]]
    org = store.org(org_id)
    for task_id in ids[1:]:  # finished tasks as the worker's ack leaves them
        rclient.hset(
            org.shard.task(task_id),
            mapping={
                "status": "COMPLETED",
                "result": json.dumps({"text": task_id}),
                "started": 1,
                "finished": 2,
                "charged": 4,
            },
        )
    first = http.get(f"/v1/async/batch/{body['batchId']}/results?limit=2", headers=auth(key))
    lines = [json.loads(line) for line in first.data.decode().splitlines()]
    assert [(x["index"], x["taskId"]) for x in lines] == [(1, ids[1]), (2, ids[2])]
    assert lines[0]["response"] == {"text": ids[1]} and lines[0]["task"]["status"] == "COMPLETED"
    cursor = first.headers["X-Next-Cursor"]
    rest = http.get(f"/v1/async/batch/{body['batchId']}/results?limit=2&cursor={cursor}", headers=auth(key))
    assert [json.loads(x)["index"] for x in rest.data.decode().splitlines()] == [3, 4]
    assert "X-Next-Cursor" not in rest.headers


def test_listing_pages_newest_first_with_filters(http: Any, make_org: Any) -> None:
    _, key = make_org()
    first = http.post(
        "/v1/async/task/batch", json=[task(str(i), priority=1 + i % 2) for i in range(7)], headers=auth(key)
    ).json
    single = http.post("/v1/async/task", json=task("solo", priority=9), headers=auth(key)).json["task"]
    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/async/tasks?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = http.get(url, headers=auth(key)).json
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    expected = [single["id"]] + [x["task"]["id"] for x in reversed(first["results"])]
    assert seen == expected
    only_p2 = http.get("/v1/async/tasks?priority=2", headers=auth(key)).json["tasks"]
    assert len(only_p2) == 3 and all(t["priority"] == 2 for t in only_p2)
    in_batch = http.get(f"/v1/async/tasks?batchId={first['batchId']}&status=QUEUED", headers=auth(key)).json
    assert len(in_batch["tasks"]) == 7 and all(t["batchId"] == first["batchId"] for t in in_batch["tasks"])
    bad = http.get("/v1/async/tasks?status=DONE&limit=0", headers=auth(key))
    assert bad.status_code == 400 and bad.json["error"]["code"] == "VALIDATION_ERROR"


def test_invalid_batch_webhook_rejects_the_whole_request(http: Any, make_org: Any) -> None:
    _, key = make_org()
    r = http.post("/v1/async/task/batch?batchWebhook=http://127.0.0.1/hook", json=[task()], headers=auth(key))
    assert r.status_code == 422
    assert r.json["error"]["details"][0]["field"] == "batchWebhook.url"
    assert http.get("/v1/async/status", headers=auth(key)).json["queuedTasks"] == 0


def test_trimming_expired_tasks_keeps_listing_cursors_valid(
    http: Any, make_org: Any, rclient: Any, store: Any
) -> None:
    from taskq.scheduler import trim_listing
    from tests.support.scheduler import Scheduler

    org_id, key = make_org()
    org = store.org(org_id)
    body = http.post("/v1/async/task/batch", json=[task(str(i)) for i in range(6)], headers=auth(key)).json
    ids = [x["task"]["id"] for x in body["results"]]
    first = http.get("/v1/async/tasks?limit=2", headers=auth(key)).json
    assert [t["id"] for t in first["tasks"]] == [ids[5], ids[4]]
    # the two oldest expire (retention), then the fourth: only the head of the listing can go
    for task_id in (ids[0], ids[1], ids[3]):
        rclient.delete(org.shard.task(task_id))
    assert Scheduler(rclient).run(trim_listing(org.shard, org_id)) == 2
    assert rclient.lrange(org.shard.org_tasks(org_id), 0, -1) == ids[2:]
    assert Scheduler(rclient).run(trim_listing(org.shard, org_id)) == 0
    rest = http.get(f"/v1/async/tasks?limit=5&cursor={first['nextCursor']}", headers=auth(key)).json
    assert [t["id"] for t in rest["tasks"]] == [ids[2]] and rest["nextCursor"] is None
    newer = http.post("/v1/async/task", json=task("new"), headers=auth(key)).json["task"]["id"]
    everything = http.get("/v1/async/tasks", headers=auth(key)).json["tasks"]
    assert [t["id"] for t in everything] == [newer, ids[5], ids[4], ids[2]]


def test_sweeper_trims_each_org_listing_of_its_shard_once_a_minute(real_redis: Any) -> None:
    import asyncio

    from taskq.asyncops import AsyncScheduler
    from taskq.store import Store
    from taskq.worker.leases import sweep_once
    from tests.support.env import REAL_REDIS_URL

    store = Store(real_redis)
    orgs = [store.create_org(f"sweep{i}", credits=100, concurrency=5, queue_limit=100)[0] for i in range(2)]
    lists = {org: store.org(org).shard.org_tasks(org) for org in orgs}
    for org, key in lists.items():
        real_redis.rpush(key, "gone-1", "gone-2")  # task records expired long ago
        real_redis.rpush(key, *[f"live-{i}" for i in range(3)])
        for i in range(3):
            real_redis.hset(store.org(org).shard.task(f"live-{i}"), "status", "QUEUED")

    async def sweep() -> tuple[int, int]:
        client = async_client(REAL_REDIS_URL)
        try:
            ops = AsyncScheduler(client)
            shard = store.org(orgs[0]).shard
            return await sweep_once(ops, shard, 1), await sweep_once(ops, shard, 1)
        finally:
            await client.aclose()

    first, again = asyncio.run(sweep())
    assert first >= 4 and again == 0  # the second run within the minute does nothing
    for org, key in lists.items():
        assert real_redis.lrange(key, 0, -1) == ["live-0", "live-1", "live-2"]
        assert real_redis.hget(store.org(org).shard.org(org), "list_base") == "2"
