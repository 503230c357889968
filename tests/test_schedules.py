"""Recurring schedules: the resource, and each occurrence fired once, whoever tries and whoever dies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from taskq import schedules
from taskq.api import create_app
from taskq.schedules import FIRING_LEASE_MS, firing_batch_id
from taskq.schemas.tasks import epoch_ms
from taskq.settings import Settings
from taskq.store import Store
from tests.support.orgs import auth
from tests.support.settings import make_settings
from tests.support.tasks import counters

TASK = {"taskType": "CHATGPT", "payload": {"prompt": "best vector db?", "country": "US"}}


def new_schedule(http: Any, key: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "watch", "everySeconds": 2, "tasks": [TASK], **fields}
    answer = http.post("/v1/async/schedules", json=body, headers=auth(key))
    assert answer.status_code == 200, answer.json
    schedule: dict[str, Any] = answer.json["schedule"]
    return schedule


def next_ms(schedule: dict[str, Any]) -> int:
    return epoch_ms(schedule["nextRunAt"])


def tasks_of(store: Store, org: str) -> list[dict[str, str]]:
    shard = store.org(org).shard
    ids = store.client.lrange(shard.org_tasks(org), 0, -1)
    return [store.client.hgetall(shard.task(i)) for i in ids]


def show(http: Any, key: str, schedule_id: str) -> dict[str, Any]:
    answer = http.get(f"/v1/async/schedules/{schedule_id}", headers=auth(key))
    assert answer.status_code == 200, answer.json
    schedule: dict[str, Any] = answer.json["schedule"]
    return schedule


# The resource -----------------------------------------------------------------------------------------


def test_schedule_lifecycle_through_the_api(http: Any, make_org: Any) -> None:
    _, key = make_org()
    made = new_schedule(http, key, cron="30 2 * * *", everySeconds=None, timezone="Europe/Berlin",
                        batchWebhook={"url": "https://93.184.215.14/batch"})  # fmt: skip
    assert (
        made["cron"] == "30 2 * * *" and made["everySeconds"] is None and made["timezone"] == "Europe/Berlin"
    )
    assert made["nextRunAt"].endswith(("00:30:00.000Z", "01:30:00.000Z")) and made["taskCount"] == 1
    assert made["batchWebhook"] == {"url": "https://93.184.215.14/batch"} and made["lastRun"] is None
    listed = http.get("/v1/async/schedules", headers=auth(key)).json["schedules"]
    assert [s["id"] for s in listed] == [made["id"]]
    shown = show(http, key, made["id"])
    assert shown["tasks"] == [TASK] and shown["runs"] == []

    paused = http.patch(f"/v1/async/schedules/{made['id']}", json={"paused": True}, headers=auth(key)).json
    assert paused["schedule"]["paused"] is True and paused["schedule"]["nextRunAt"] is None
    changed = http.patch(f"/v1/async/schedules/{made['id']}", json={"name": "x", "everySeconds": 60,
                         "paused": False}, headers=auth(key)).json["schedule"]  # fmt: skip
    assert (changed["name"], changed["everySeconds"], changed["cron"], changed["paused"]) == (
        "x",
        60,
        None,
        False,
    )
    assert show(http, key, made["id"])["name"] == "x"

    gone = http.delete(f"/v1/async/schedules/{made['id']}", headers=auth(key))
    assert gone.status_code == 200 and gone.json["deleted"] is True
    assert http.get(f"/v1/async/schedules/{made['id']}", headers=auth(key)).status_code == 404
    assert http.get("/v1/async/schedules", headers=auth(key)).json["schedules"] == []


def test_another_orgs_schedule_is_not_found(http: Any, make_org: Any) -> None:
    _, mine = make_org()
    _, theirs = make_org()
    made = new_schedule(http, mine)
    path = f"/v1/async/schedules/{made['id']}"
    assert http.get(path, headers=auth(theirs)).status_code == 404
    assert http.patch(path, json={"paused": True}, headers=auth(theirs)).status_code == 404
    assert http.delete(path, headers=auth(theirs)).status_code == 404
    assert http.get("/v1/async/schedules", headers=auth(theirs)).json["schedules"] == []
    assert show(http, mine, made["id"])["paused"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"everySeconds": 2, "tasks": [TASK]}, "name"),
        ({"name": "n", "tasks": [TASK]}, "cron"),
        ({"name": "n", "everySeconds": 2, "cron": "* * * * *", "tasks": [TASK]}, "everySeconds"),
        ({"name": "n", "everySeconds": 0, "tasks": [TASK]}, "everySeconds"),
        ({"name": "n", "cron": "61 * * * *", "tasks": [TASK]}, "cron"),
        ({"name": "n", "cron": "0 3 * * *", "timezone": "Europe/Atlantis", "tasks": [TASK]}, "timezone"),
        ({"name": "n", "everySeconds": 2, "tasks": []}, "tasks"),
        ({"name": "n", "everySeconds": 2}, "tasks"),
        ({"name": "n", "everySeconds": 2, "tasks": [TASK, {"taskType": "NOPE"}]}, "tasks.1.taskType"),
        ({"name": "n", "everySeconds": 2, "tasks": [{**TASK, "runAt": "2027-01-01T00:00:00Z"}]},
         "tasks.0.runAt"),
        ({"name": "n", "everySeconds": 2, "tasks": [{**TASK, "idempotencyKey": "k" * 240}]},
         "tasks.0.idempotencyKey"),
        ({"name": "n", "everySeconds": 2, "tasks": [TASK], "batchWebhook": {"url": "http://10.0.0.1/x"}},
         "batchWebhook"),
        ({"name": "n", "everySeconds": 2, "tasks": [TASK], "color": "red"}, "color"),
        ([TASK], "body"),
    ],
)  # fmt: skip
def test_bad_schedules_are_refused_naming_the_field(http: Any, make_org: Any, body: Any, field: str) -> None:
    _, key = make_org()
    answer = http.post("/v1/async/schedules", json=body, headers=auth(key))
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "VALIDATION_ERROR"
    assert field in [e["field"] for e in answer.json["error"]["details"]]
    assert http.get("/v1/async/schedules", headers=auth(key)).json["schedules"] == []


def test_a_schedule_holds_at_most_a_batch_of_tasks(http: Any, make_org: Any) -> None:
    _, key = make_org()
    body = {"name": "n", "everySeconds": 2, "tasks": [TASK] * 501}
    answer = http.post("/v1/async/schedules", json=body, headers=auth(key))
    assert answer.status_code == 400 and answer.json["error"]["details"][0]["field"] == "tasks"


def test_a_bad_change_changes_nothing(http: Any, make_org: Any) -> None:
    _, key = make_org()
    made = new_schedule(http, key)
    for body in (
        {"cron": "nope"},
        {"everySeconds": -1},
        {"tasks": [{"taskType": "GOOGLE"}]},
        {"paused": "yes"},
    ):
        answer = http.patch(f"/v1/async/schedules/{made['id']}", json=body, headers=auth(key))
        assert answer.status_code == 400, body
    assert {k: v for k, v in show(http, key, made["id"]).items() if k not in ("tasks", "runs")} == made


# Firing -----------------------------------------------------------------------------------------------


def test_each_occurrence_fires_once_however_many_workers_try(
    http: Any, store: Store, settings: Settings, make_org: Any
) -> None:
    org, key = make_org()
    made = new_schedule(http, key)
    workers = [Store(store.client), Store(store.client), Store(store.client)]  # scripts registered apart
    at = next_ms(made)
    fired = []
    for occurrence in range(3):
        now = at + occurrence * 2000
        runs = [schedules.fire_due(w, settings, now)[0] for w in workers]
        fired.append([len(r) for r in runs])
        assert sum(len(r) for r in runs) == 1
    assert all(sorted(f) == [0, 0, 1] for f in fired)
    shown = show(http, key, made["id"])
    assert [epoch_ms(r["at"]) for r in reversed(shown["runs"])] == [at, at + 2000, at + 4000]
    assert next_ms(shown) == at + 6000
    assert len(tasks_of(store, org)) == 3
    assert {t["batch"] for t in tasks_of(store, org)} == {
        firing_batch_id(made["id"], at + i * 2000) for i in range(3)
    }


def test_nothing_fires_before_its_time(http: Any, store: Store, settings: Settings, make_org: Any) -> None:
    org, key = make_org()
    made = new_schedule(http, key)
    runs, wake = schedules.fire_due(store, settings, next_ms(made) - 1)
    assert runs == [] and wake == next_ms(made)
    assert tasks_of(store, org) == []


def test_a_firing_whose_worker_died_after_claiming_is_taken_over_once(
    http: Any, store: Store, settings: Settings, make_org: Any
) -> None:
    org, key = make_org()
    made = new_schedule(http, key)
    at, shard = next_ms(made), store.org(org).shard
    dead = schedules.claim(Store(store.client), shard, made["id"], at)  # its worker dies here
    assert dead is not None and dead.occurrence == at
    assert show(http, key, made["id"])["firing"] is True
    assert schedules.fire_due(store, settings, at + FIRING_LEASE_MS - 1)[0] == []  # its claim holds
    runs, _ = schedules.fire_due(store, settings, at + FIRING_LEASE_MS)
    assert [(epoch_ms(r["at"]), r["admitted"]) for r in runs] == [(at, 1)]
    assert len(tasks_of(store, org)) == 1
    # The takeover came as late as the next occurrence (every 2 s): that one is due now, and fires too.
    again = schedules.fire_due(store, settings, at + FIRING_LEASE_MS)[0]
    assert [epoch_ms(r["at"]) for r in again] == [at + 2000]
    assert schedules.fire_due(store, settings, at + FIRING_LEASE_MS)[0] == []
    assert len(tasks_of(store, org)) == 2


def test_a_firing_whose_worker_died_after_admitting_is_recorded_from_its_batch(
    http: Any, store: Store, settings: Settings, make_org: Any
) -> None:
    org, key = make_org()
    made = new_schedule(http, key, tasks=[TASK, TASK])
    at, shard = next_ms(made), store.org(org).shard
    dead = schedules.claim(store, shard, made["id"], at)
    assert dead is not None
    schedules._admit(store, settings, dead, at)  # admitted; its worker dies before recording the run
    assert len(tasks_of(store, org)) == 2
    runs, _ = schedules.fire_due(store, settings, at + FIRING_LEASE_MS)
    assert [(epoch_ms(r["at"]), r["batchId"], r["admitted"], r["refused"]) for r in runs] == [
        (at, firing_batch_id(made["id"], at), 2, 0)
    ]
    assert len(tasks_of(store, org)) == 2, "admitted twice"


def test_a_stalled_worker_neither_admits_again_nor_records_over_its_successor(
    http: Any, store: Store, settings: Settings, make_org: Any
) -> None:
    org, key = make_org()
    made = new_schedule(http, key)
    at, shard = next_ms(made), store.org(org).shard
    stalled = schedules.claim(store, shard, made["id"], at)
    assert stalled is not None
    late = at + FIRING_LEASE_MS
    assert len(schedules.fire_due(store, settings, late)[0]) == 1  # taken over and fired
    run = schedules._admit(store, settings, stalled, late + 10)  # the stalled worker wakes up
    assert run["admitted"] == 1  # read from the batch the successor admitted
    assert schedules.record(store, shard, stalled, run) is False
    assert len(tasks_of(store, org)) == 1
    assert len(show(http, key, made["id"])["runs"]) == 1


def test_missed_occurrences_fire_the_latest_once_never_a_burst(
    http: Any, store: Store, settings: Settings, make_org: Any
) -> None:
    org, key = make_org()
    made = new_schedule(http, key)
    at = next_ms(made)
    now = at + 10 * 2000 + 500  # eleven occurrences passed while no worker ran
    runs, wake = schedules.fire_due(store, settings, now)
    assert [epoch_ms(r["at"]) for r in runs] == [at + 20_000]
    assert wake == at + 22_000
    assert schedules.fire_due(store, settings, now)[0] == []
    assert len(tasks_of(store, org)) == 1


def test_a_firing_refused_by_the_queue_limit_is_recorded_and_the_next_one_runs(
    http: Any, store: Store, settings: Settings, make_org: Any
) -> None:
    _, key = make_org(queue_limit=2)
    made = new_schedule(http, key, tasks=[TASK, TASK])
    at = next_ms(made)
    first = schedules.fire_due(store, settings, at)[0]
    second = schedules.fire_due(store, settings, at + 2000)[0]
    assert [(r["admitted"], r["refused"]) for r in first + second] == [(2, 0), (0, 2)]
    assert second[0]["error"]["code"] == "QUEUE_LIMIT_EXCEEDED" and second[0]["batchId"] is None
    assert http.delete("/v1/async/queue", headers=auth(key)).status_code == 200
    third = schedules.fire_due(store, settings, at + 4000)[0]
    assert [(r["admitted"], r["refused"]) for r in third] == [(2, 0)]
    shown = show(http, key, made["id"])
    assert [r.get("error", {}).get("code") for r in shown["runs"]] == [None, "QUEUE_LIMIT_EXCEEDED", None]
    assert shown["lastRun"] == shown["runs"][0]


def test_refused_tasks_are_counted_by_code_and_keys_are_per_occurrence(
    http: Any, store: Store, settings: Settings, make_org: Any
) -> None:
    org, key = make_org(credits=7)  # one CHATGPT task (5 credits) a firing fits
    made = new_schedule(http, key, tasks=[{**TASK, "idempotencyKey": "daily"}, TASK])
    at = next_ms(made)
    run = schedules.fire_due(store, settings, at)[0][0]
    assert (run["admitted"], run["refused"], run["refusals"]) == (1, 1, {"INSUFFICIENT_CREDITS": 1})
    [task] = tasks_of(store, org)
    assert task["idem"] == "daily:" + run["at"]
    assert counters(store, org)["reserved"] == 5


def test_delay_seconds_in_a_schedule_counts_from_each_firing(
    http: Any, store: Store, settings: Settings, make_org: Any
) -> None:
    org, key = make_org()
    made = new_schedule(http, key, tasks=[{**TASK, "delaySeconds": 30}])
    schedules.fire_due(store, settings, next_ms(made))
    [task] = tasks_of(store, org)
    assert int(task["due"]) == int(task["created"]) + 30_000 and task["status"] == "QUEUED"


def test_paused_schedules_do_not_fire_and_resume_without_catching_up(
    http: Any, store: Store, settings: Settings, make_org: Any
) -> None:
    org, key = make_org()
    made = new_schedule(http, key, paused=True)
    assert made["paused"] is True and made["nextRunAt"] is None
    assert schedules.fire_due(store, settings, epoch_ms(made["createdAt"]) + 60_000) == ([], None)
    resumed = http.patch(f"/v1/async/schedules/{made['id']}", json={"paused": False}, headers=auth(key)).json
    assert next_ms(resumed["schedule"]) > epoch_ms(resumed["schedule"]["updatedAt"])
    assert tasks_of(store, org) == []


def test_a_change_during_a_firing_keeps_its_new_timing(
    http: Any, store: Store, settings: Settings, make_org: Any
) -> None:
    org, key = make_org()
    made = new_schedule(http, key)
    at, shard = next_ms(made), store.org(org).shard
    claimed = schedules.claim(store, shard, made["id"], at)
    assert claimed is not None
    changed = http.patch(f"/v1/async/schedules/{made['id']}", json={"everySeconds": 3600}, headers=auth(key))
    new_next = next_ms(changed.json["schedule"])
    run = schedules._admit(store, settings, claimed, at)
    assert schedules.record(store, shard, claimed, run) is True
    shown = show(http, key, made["id"])
    assert next_ms(shown) == new_next and shown["firing"] is False and len(shown["runs"]) == 1


def test_a_schedule_deleted_during_its_firing_records_nothing(
    http: Any, store: Store, settings: Settings, make_org: Any
) -> None:
    org, key = make_org()
    made = new_schedule(http, key)
    at, shard = next_ms(made), store.org(org).shard
    claimed = schedules.claim(store, shard, made["id"], at)
    assert claimed is not None
    assert http.delete(f"/v1/async/schedules/{made['id']}", headers=auth(key)).status_code == 200
    run = schedules._admit(store, settings, claimed, at)
    assert schedules.record(store, shard, claimed, run) is False
    assert store.client.zcard(shard.scheds) == 0 and store.client.exists(shard.sched(made["id"])) == 0
    assert schedules.fire_due(store, settings, at + 10 * FIRING_LEASE_MS) == ([], None)


def test_the_dashboard_data_lists_schedules_with_next_run_and_last_outcome(
    rclient: Any, store: Store, settings: Settings, make_org: Any
) -> None:
    ops: Any = create_app(make_settings(admin_token="admin-secret"), client=rclient).test_client()
    org, key = make_org()
    made = new_schedule(ops, key)
    schedules.fire_due(store, settings, next_ms(made))
    data = ops.get("/dashboard/data", headers={"Authorization": "Bearer admin-secret"}).json
    [row] = data["schedules"]
    assert (row["id"], row["org"], row["name"]) == (made["id"], org, "watch")
    assert next_ms(row) == next_ms(made) + 2000 and row["lastRun"]["admitted"] == 1


@pytest.mark.redis
def test_cli_lists_shows_pauses_and_resumes_schedules(
    real_redis: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskq.cli import main
    from tests.support.env import REAL_REDIS_URL

    store = Store(real_redis)
    org, key = store.create_org("cli", credits=100, concurrency=10, queue_limit=100)
    http: Any = create_app(make_settings(), client=real_redis).test_client()
    made = new_schedule(http, key)
    monkeypatch.setenv("TASKQ_REDIS_URL", REAL_REDIS_URL)

    def run(*argv: str) -> Any:
        capsys.readouterr()
        assert main(["schedule", *argv]) == 0
        return json.loads(capsys.readouterr().out)

    assert [row["id"] for row in run("list")] == [made["id"]]
    assert run("show", made["id"])["runs"] == []
    assert run("pause", made["id"])["paused"] is True
    assert real_redis.zcard(store.org(org).shard.scheds) == 0
    assert run("resume", made["id"])["paused"] is False
    assert real_redis.zcard(store.org(org).shard.scheds) == 1
    capsys.readouterr()
    assert main(["schedule", "show", "00000000-0000-4000-8000-000000000000"]) == 1


def test_a_new_time_zone_moves_the_next_run(http: Any, make_org: Any) -> None:
    _, key = make_org()
    made = new_schedule(http, key, everySeconds=None, cron="0 12 * * *")
    assert made["nextRunAt"].endswith("T12:00:00.000Z")
    path = f"/v1/async/schedules/{made['id']}"
    moved = http.patch(path, json={"timezone": "Asia/Tokyo"}, headers=auth(key)).json["schedule"]
    assert moved["timezone"] == "Asia/Tokyo" and moved["nextRunAt"].endswith("T03:00:00.000Z")
    assert show(http, key, made["id"])["nextRunAt"] == moved["nextRunAt"]
