"""The operator console without a browser: sign-in and CSRF, the figures its charts and tiles show, the
cross-organization listing, and the attempt log its task page reads (fakeredis and the real Redis)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from taskq import lookup, scheduler
from taskq.api import create_app
from taskq.api.charts import minute_chart
from taskq.api.ops import recent_rate
from taskq.batches import TaskFilter
from taskq.errors import Code
from taskq.keys import ATTEMPT_LOG
from taskq.schemas.tasks import TaskType
from tests.support.console import TOKEN, signed_in, task
from tests.support.orgs import auth
from tests.support.scheduler import Scheduler
from tests.support.settings import make_settings

CAPS: dict[str, int | None] = {t.value: None for t in TaskType}


@pytest.fixture
def console(rclient: Any) -> Any:
    return create_app(make_settings(admin_token=TOKEN), client=rclient).test_client()


def minute(at: int, **counts: int) -> dict[str, int]:
    return {"minute": at * 60, "admitted": 0, "completed": 0, "failed": 0, **counts}


def test_completed_per_minute_counts_what_finished_in_the_unfinished_minute() -> None:
    now = 1_000 * 60 + 5.0  # five seconds into minute 1000
    series = [minute(998, completed=20), minute(999), minute(1000, completed=540)]
    assert recent_rate(series, "completed", now) == 540  # the last full minute alone reads 0
    series = [minute(999, completed=120), minute(1000, completed=30)]
    assert recent_rate(series, "completed", 1_000 * 60 + 45.0) == 30 + 120 * 0.25


def test_charts_leave_out_the_current_minute_and_label_both_axes() -> None:
    series = [minute(1000 + i, admitted=10 * i, completed=10 * i - 1 if i else 0) for i in range(31)]
    series[-1] = minute(1030)  # the current minute has barely started
    chart = minute_chart(series, "admitted", "completed")
    assert len(chart.bars) == 30 and len(chart.line.split()) == 30
    assert chart.bars[-1].title == "17:09 UTC: 290 admitted, 289 completed"
    assert [t.label for t in chart.x_ticks] == ["16:44", "16:49", "16:54", "16:59", "17:04", "17:09"]
    assert [t.label for t in chart.y_ticks] == ["0", "100", "200", "300", "400"]
    tallest = min(chart.bars, key=lambda b: b.y)
    assert tallest is chart.bars[-1] and tallest.y > chart.y_ticks[-1].at  # under the top tick
    # admitted and completed differ in kind (bars, line): equal values cannot hide one another
    same = minute_chart([minute(1, admitted=5, completed=5), minute(2)], "admitted", "completed")
    assert same.bars and same.line


def test_console_needs_a_session_and_its_actions_a_csrf_token(console: Any, make_org: Any) -> None:
    _, key = make_org()
    tid = console.post("/v1/async/task", json=task(), headers=auth(key)).json["task"]["id"]
    assert console.get("/dashboard/tasks").status_code == 401  # the sign-in page
    assert console.get("/dashboard?token=nope").status_code == 401
    response = console.get(f"/dashboard?token={TOKEN}")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]  # no clickjacking
    csrf = signed_in(console)
    assert console.post(f"/dashboard/tasks/{tid}/cancel").status_code == 403
    assert console.post(f"/dashboard/tasks/{tid}/cancel", data={"csrf": csrf + "x"}).status_code == 403
    assert console.get(f"/v1/async/task/{tid}", headers=auth(key)).json["task"]["status"] == "QUEUED"
    done = console.post(f"/dashboard/tasks/{tid}/cancel", data={"csrf": csrf})
    assert done.status_code == 303 and done.headers["Location"].startswith(f"/dashboard/tasks/{tid}?notice=")
    assert "Task canceled" in console.get(done.headers["Location"]).data.decode()
    assert console.get(f"/v1/async/task/{tid}", headers=auth(key)).json["task"]["status"] == "CANCELED"
    again = console.post(f"/dashboard/tasks/{tid}/cancel", data={"csrf": csrf})
    assert again.status_code == 409 and Code.TASK_ALREADY_FINISHED.value in again.data.decode()


def test_json_endpoints_take_the_bearer_token_or_the_session(console: Any, rclient: Any) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert console.get("/metrics", headers=bearer).status_code == 200
    assert console.get("/dashboard/data", headers=bearer).status_code == 200
    assert console.get("/dashboard/data").status_code == 401
    signed_in(console)
    assert console.get("/dashboard/data").status_code == 200
    assert console.get("/dashboard/data", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # a session signed under another admin token is worthless
    other = create_app(make_settings(admin_token="rotated"), client=rclient).test_client()
    other.set_cookie("taskq_console", console.get_cookie("taskq_console").value)
    assert other.get("/dashboard/data").status_code == 401
    assert other.get("/dashboard").status_code == 401
    # no admin token configured: the console is off, whatever cookie comes
    off = create_app(make_settings(), client=rclient).test_client()
    off.set_cookie("taskq_console", console.get_cookie("taskq_console").value)
    assert off.get("/dashboard").status_code == 403 and off.get("/dashboard/data").status_code == 403


def test_console_pages_render_and_search_finds_tasks_and_batches(console: Any, make_org: Any) -> None:
    _, key = make_org()
    body = console.post("/v1/async/task/batch", json=[task("a"), task("b")], headers=auth(key)).json
    tid, bid = body["results"][0]["task"]["id"], body["batchId"]
    signed_in(console)
    pages = ["/dashboard", "/dashboard/tasks?status=QUEUED&type=GEMINI&priority=1", "/dashboard/workers"]
    pages += [f"/dashboard/tasks/{tid}", f"/dashboard/batches/{bid}", f"/dashboard/tasks?batch={bid}"]
    for path in pages:
        assert console.get(path).status_code == 200, path
    assert console.get(f"/dashboard/search?q={tid}").headers["Location"] == f"/dashboard/tasks/{tid}"
    assert console.get(f"/dashboard/search?q={bid}").headers["Location"] == f"/dashboard/batches/{bid}"
    assert console.get("/dashboard/search?q=nothing").status_code == 404
    for bad in ("status=DONE", "priority=%C2%B2", "type=FAX", "cursor=%%%"):
        assert console.get(f"/dashboard/tasks?{bad}").status_code == 400, bad


def test_the_listing_of_every_org_pages_without_skipping_or_repeating(
    console: Any, make_org: Any, store: Any
) -> None:
    orgs = [make_org() for _ in range(3)]
    expected: set[str] = set()
    for round_ in range(5):  # interleaved arrivals; the middle org stops early
        for n, (_, key) in enumerate(orgs):
            if n == 1 and round_ > 1:
                continue
            batch = [task(f"{round_}-{n}-{i}", priority=1 + i % 3) for i in range(n + 2)]
            results = console.post("/v1/async/task/batch", json=batch, headers=auth(key)).json["results"]
            expected |= {r["task"]["id"] for r in results}
    org_ids = [org for org, _ in orgs]
    seen: list[str] = []
    created: list[str] = []
    cursor = None
    for _ in range(50):
        page = lookup.list_all(store, org_ids, TaskFilter(), cursor, 4)
        assert len(page.rows) <= 4
        seen += [row.view["id"] for row in page.rows]
        created += [row.view["createdAt"] for row in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(seen) == expected
    assert created == sorted(created, reverse=True)
    urgent = lookup.list_all(store, org_ids, TaskFilter(priority=3), None, 100).rows
    assert urgent and all(row.view["priority"] == 3 for row in urgent)
    assert len(urgent) == sum(1 for _ in range(5) for n in range(3) for i in range(n + 2)
                              if i % 3 == 2 and not (n == 1 and _ > 1))  # fmt: skip


def test_retried_and_expired_attempts_are_logged_on_the_task(console: Any, make_org: Any, store: Any) -> None:
    org_id, key = make_org()
    tid = console.post("/v1/async/task", json=task(), headers=auth(key)).json["task"]["id"]
    shard = store.org(org_id).shard
    run = Scheduler(store.client).run
    now = int(time.time() * 1000)
    (held,) = run(scheduler.claim(shard, CAPS, now=now, lease_ms=30_000, k=5))
    op = scheduler.retry(held, due=now, now=now, retention=60, code=Code.PROVIDER_TIMEOUT, message="slow")
    assert run(op)
    (held,) = run(scheduler.claim(shard, CAPS, now=now + 1, lease_ms=1, k=5))
    assert run(scheduler.reap(shard, now=now + 10, max_attempts=5, retention=60)).requeued == 1
    log = [json.loads(line) for line in store.client.hget(shard.task(tid), ATTEMPT_LOG).split("\n")]
    assert [(e["attempt"], e["outcome"]) for e in log] == [(1, "retry"), (2, "lease_expired")]
    assert log[0]["code"] == "PROVIDER_TIMEOUT" and log[0]["message"] == "slow" and log[0]["due"] == now
    signed_in(console)
    page = console.get(f"/dashboard/tasks/{tid}").data.decode()
    assert "PROVIDER_TIMEOUT" in page and "LEASE_EXPIRED" in page
