"""The operator console in a real headless Chromium (Debian's, driven by Playwright) against a real
Redis, the real intake on a socket, the provider simulator, a worker drain and a webhook receiver:
every page renders what Redis holds, every action works end to end, and each page is screenshotted
(tmp/artifacts/console/, or $TASKQ_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.serving import make_server

from taskq.api import create_app
from taskq.store import Store
from tests.support.env import IN_CI, REAL_REDIS_URL
from tests.support.orgs import auth
from tests.support.receiver import Receiver
from tests.support.settings import make_settings
from tests.support.upstream import Upstream

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "console-admin-token"
ARTIFACTS = Path(os.environ.get("TASKQ_TEST_ARTIFACTS") or Path(__file__).parents[1] / "tmp" / "artifacts")
DEADLINE = 60.0  # generous: CI runs on a loaded machine


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        if IN_CI:
            raise RuntimeError("CI needs the playwright package (pip install -e '.[dev]')") from exc
        pytest.skip("playwright not installed; mandatory in CI")
    if CHROMIUM is None:
        if IN_CI:
            raise RuntimeError("CI needs Debian's chromium for the console test (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install chromium); mandatory in CI")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


class Stack:
    """The intake served on a free port, the simulator, a webhook receiver, one organization."""

    def __init__(self, real_redis: Any, sim: Upstream, hook: Receiver) -> None:
        self.redis = real_redis
        self.hook = hook
        self.sim_url = sim.url
        self.settings = make_settings(
            redis_url=REAL_REDIS_URL, upstream=sim.url, admin_token=TOKEN,
            webhook_allow_networks=["127.0.0.0/8"], worker_idle_wait_seconds=0.1,
            retry_base_seconds=0.05, retry_max_seconds=0.3,
        )  # fmt: skip
        self.server = make_server("127.0.0.1", 0, create_app(self.settings, client=real_redis), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        store = Store(real_redis)
        limits = {"credits": 100_000, "concurrency": 20, "queue_limit": 5000}
        self.org, self.key = store.create_org("Acme Research", **limits)
        self.other_org, self.other_key = store.create_org("Globex", **limits)
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def submit(self, tasks: list[dict[str, Any]], key: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = self.http.post(
            "/v1/async/task/batch", json=tasks, headers=auth(key or self.key)
        ).json()
        assert body["summary"]["failed"] == 0, body
        return body

    def task(self, task_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(f"/v1/async/task/{task_id}", headers=auth(self.key)).json()
        return body

    def statuses(self, ids: list[str]) -> list[str]:
        return [self.task(i)["task"]["status"] for i in ids]

    def close(self) -> None:
        self.http.close()
        self.server.shutdown()


@pytest.fixture
def stack(real_redis: Any) -> Iterator[Stack]:
    with Upstream(0.01, simulator=True) as sim, Receiver() as hook:
        s = Stack(real_redis, sim, hook)
        yield s
        s.close()


class Drain:
    """A worker drain in a process of its own (as `taskq worker` runs it), stopped with SIGTERM."""

    def __init__(self, stack: Stack, log: Path) -> None:
        env = {
            **os.environ, "TASKQ_REDIS_URL": REAL_REDIS_URL, "TASKQ_UPSTREAM_BASE_URL": stack.sim_url,
            "TASKQ_OPENAI_API_KEY": "sk-test", "TASKQ_WEBHOOK_ALLOW_NETWORKS": '["127.0.0.0/8"]',
            "TASKQ_WORKER_IDLE_WAIT_SECONDS": "0.1", "TASKQ_RETRY_BASE_SECONDS": "0.05",
            "TASKQ_RETRY_MAX_SECONDS": "0.3", "TASKQ_SHUTDOWN_GRACE_SECONDS": "1",
        }  # fmt: skip
        self.log = log
        argv = [sys.executable, "-c", "from taskq.worker.hosting import run; run()"]
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def running(self) -> bool:
        """True while the drain runs; a drain that exited fails the test with its output."""
        if self.proc.poll() is not None:
            raise AssertionError(
                f"the drain exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
            )
        return True

    def __enter__(self) -> Drain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def task(kind: str, n: int, hook: str | None = None) -> dict[str, Any]:
    prompt = {"ok": f"vector databases {n}", "retry": f"retry me [sim:503-once:console-{n}]",
              "fail": f"bad request {n} [sim:400]"}[kind]  # fmt: skip
    item: dict[str, Any] = {"taskType": "CHATGPT", "payload": {"prompt": prompt, "country": "US"},
                            "priority": 1 + n % 10}  # fmt: skip
    if hook:
        item["webhook"] = {"url": hook}
    return item


def shoot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000, path
    return path


def act(page: Any, button: str) -> str:
    """Click an action button, accept its confirmation, return the notice the next page shows."""
    questions: list[str] = []

    def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name=button).click()
    page.wait_for_selector(".notice")
    assert questions, f"{button} asked for no confirmation"
    return str(page.inner_text(".notice"))


def test_console_pages_and_actions_in_chromium(
    browser: Any, stack: Stack, real_redis: Any, tmp_path: Path
) -> None:
    # Work done by a real drain: completions, a retried attempt, failures, webhooks delivered.
    hook = stack.hook.url
    done = stack.submit([task("ok", 0, hook), task("retry", 1, hook), task("ok", 2), task("fail", 3, hook),
                         task("fail", 4, hook)])  # fmt: skip
    done_ids = [r["task"]["id"] for r in done["results"]]

    def finished() -> bool:
        return len(stack.hook.hits) == 4 and {"COMPLETED", "FAILED"} >= set(stack.statuses(done_ids))

    with Drain(stack, tmp_path / "drain-1.log") as drain:
        wait_for(lambda: drain.running() and finished(), "the first batch and its webhooks")
    assert stack.statuses(done_ids) == ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "FAILED"]
    # Waiting work: 60 queued tasks in one batch (more than a page), one task of another org.
    waiting = stack.submit([task("ok", 10 + n) for n in range(60)])
    waiting_ids = [r["task"]["id"] for r in waiting["results"]]
    lone = stack.submit([task("ok", 99)], key=stack.other_key)["results"][0]["task"]["id"]

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Signed out: the sign-in page; the link `taskq up` prints signs in and drops the token from the URL.
    page.goto(f"{stack.url}/dashboard/tasks")
    assert page.get_by_placeholder("Admin token").is_visible()
    shoot(page, "sign-in")
    page.goto(f"{stack.url}/dashboard?token={TOKEN}")
    assert page.url == f"{stack.url}/dashboard"
    [cookie] = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]

    # Overview: figures as Redis holds them, charts of full minutes with axes.
    page.wait_for_selector("body[data-ready='1']")
    queued = sum(int(real_redis.hget(Store(real_redis).org(o).shard.org(o), "queued") or 0)
                 for o in (stack.org, stack.other_org))  # fmt: skip
    assert int(page.inner_text("#kpi-queued")) == queued == 61
    assert int(page.inner_text("#kpi-completed")) == 3 and int(page.inner_text("#kpi-failed")) == 2
    assert page.locator("svg.chart").first.locator("rect").count() == 30  # 30 full minutes, not the current
    assert page.locator("svg.chart").first.locator("text.xlab").count() == 6
    # one reading of the legend (the page refreshes itself): the 30 full minutes and this one hold all 3
    legend = page.inner_text("#throughput-legend")
    counts = re.search(r"completed\s+(\d+).*?(\d+)\s+completed", legend, re.S)
    assert counts and int(counts[1]) + int(counts[2]) == 3, legend
    assert "Acme Research" in page.inner_text("#by-org") and "Globex" in page.inner_text("#by-org")
    assert "PROVIDER_REJECTED" in page.inner_text("#failures")
    shoot(page, "overview")

    # Tasks: status tabs, filters and paging.
    page.click("header nav >> text=Tasks")
    page.click(".tabs >> text=Failed")
    listed = page.locator("#task-list td:first-child a").all_inner_texts()
    assert sorted(listed) == sorted(done_ids[3:])
    page.click(".tabs >> text=Queued")
    first = page.locator("#task-list td:first-child a").all_inner_texts()
    assert len(first) == 50
    shoot(page, "tasks")
    page.click("#next-page")
    rest = page.locator("#task-list td:first-child a").all_inner_texts()
    assert sorted(first + rest) == sorted([*waiting_ids, lone])
    page.select_option("select[name=org]", stack.other_org)
    page.click("text=Filter")
    assert page.locator("#task-list td:first-child a").all_inner_texts() == [lone]

    # Task page: payload, result, every attempt, every delivery.
    page.fill("header .search input", done_ids[1])
    page.press("header .search input", "Enter")
    page.wait_for_url(f"**/dashboard/tasks/{done_ids[1]}")
    attempts = page.locator("#attempts tr").all_inner_texts()[1:]
    assert len(attempts) == 2 and "RETRY" in attempts[0] and "PROVIDER_UNAVAILABLE" in attempts[0]
    assert "COMPLETED" in attempts[1]
    assert "vector databases" not in page.inner_text("#payload") and "retry me" in page.inner_text("#payload")
    assert '"text"' in page.inner_text("#result")
    assert "DELIVERED" in page.inner_text(".delivery")
    shoot(page, "task")

    # Cancel one queued task; the other org's task from its own page.
    page.goto(f"{stack.url}/dashboard/tasks/{lone}")
    assert "Task canceled" in act(page, "Cancel task")
    lone_now = stack.http.get(f"/v1/async/task/{lone}", headers=auth(stack.other_key)).json()
    assert lone_now["task"]["status"] == "CANCELED"

    # Batch page: cancel the rest of the waiting batch.
    page.goto(f"{stack.url}/dashboard/batches/{waiting['batchId']}")
    assert int(page.inner_text("#count-queued")) == 60
    shoot(page, "batch")
    assert "60 canceled" in act(page, "Cancel batch")
    assert set(stack.statuses(waiting_ids)) == {"CANCELED"}

    # Retry the failed tasks of the first batch: a new batch of the same tasks.
    page.goto(f"{stack.url}/dashboard/batches/{done['batchId']}")
    assert int(page.inner_text("#count-failed")) == 2
    assert "2 of 2 failed tasks submitted again" in act(page, "Retry 2 failed")
    retried = page.url.split("/dashboard/batches/")[1].split("?")[0]
    assert retried != done["batchId"] and int(page.inner_text("#count-queued")) == 2

    # Redeliver a failed task's webhook while a worker runs; the workers page shows it.
    with Drain(stack, tmp_path / "drain-2.log") as drain:
        page.goto(f"{stack.url}/dashboard/tasks/{done_ids[3]}")
        assert "PROVIDER_REJECTED" in page.inner_text("#error")
        assert "queued for redelivery" in act(page, "Redeliver webhook")
        wait_for(lambda: drain.running() and len(stack.hook.hits) >= 4 + 1 + 2,
                 "the redelivery and the retried tasks' webhooks")  # fmt: skip
        event_ids = [h.webhook_id for h in stack.hook.hits]
        assert event_ids.count(f"msg_{done_ids[3]}") == 2  # the same event sent again
        # the receiver answered; the worker records the outcome right after

        def both_delivered() -> bool:
            page.reload()
            states = page.locator(".delivery h3").all_inner_texts()
            return len(states) == 2 and all("DELIVERED" in state for state in states)

        wait_for(both_delivered, "both deliveries recorded as delivered")
        shoot(page, "task-failed")
        page.goto(f"{stack.url}/dashboard/workers")
        wait_for(lambda: page.reload() or page.locator("#workers td").count() > 0, "a worker heartbeat")
        assert "ALIVE" in page.inner_text("#workers")
        shoot(page, "workers")

    # Search for something that is not there; then the forms without their CSRF token are refused.
    page.fill("header .search input", "no-such-id")
    page.press("header .search input", "Enter")
    assert "No task and no batch has the id no-such-id" in page.inner_text("main")
    forged = page.request.post(f"{stack.url}/dashboard/tasks/{done_ids[0]}/redeliver", form={"csrf": "x"})
    assert forged.status == 403
    page.click("text=Sign out")
    assert page.get_by_placeholder("Admin token").is_visible()
    assert page.request.get(f"{stack.url}/dashboard/data").status == 401
    assert not errors, errors
    context.close()


def test_overview_refreshes_in_place(browser: Any, stack: Stack) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{stack.url}/dashboard?token={TOKEN}")
    page.wait_for_selector("body[data-ready='1']")
    assert int(page.inner_text("#kpi-queued")) == 0
    stack.submit([task("ok", n) for n in range(7)])
    wait_for(lambda: page.inner_text("#kpi-queued") == "7", "the overview to refresh")
    assert re.fullmatch(r"updated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page.inner_text("#stamp"))
    context.close()


def test_lanes_pause_and_resume_and_schedules_show_on_the_overview(browser: Any, stack: Stack) -> None:
    from taskq import flow, schedules

    store = Store(stack.redis)
    every = {"name": "hourly-brands", "everySeconds": 3600, "tasks": [task("ok", 0)]}
    nightly = {"name": "nightly-check", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
               "tasks": [task("ok", 1)], "paused": True}  # fmt: skip
    made = schedules.create(store, stack.settings, store.org(stack.org), every)
    schedules.create(store, stack.settings, store.org(stack.org), nightly)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.goto(f"{stack.url}/dashboard?token={TOKEN}")
    page.wait_for_selector("body[data-ready='1']")

    table = page.inner_text("#schedules")
    assert (
        "hourly-brands" in table and "3600 s" in table and made["nextRunAt"][:19].replace("T", " ") in table
    )
    assert "nightly-check" in table and "30 2 * * * Europe/Berlin" in table and "paused" in table

    row = page.locator("#by-provider tr", has_text="GEMINI")
    questions: list[str] = []

    def confirm(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", confirm)
    row.get_by_role("button", name="Pause").click()
    page.wait_for_selector(".notice")
    assert "GEMINI paused" in page.inner_text(".notice") and questions
    assert [lane["state"] for lane in flow.status(store) if lane["provider"] == "GEMINI"] == [
        "paused-by-operator"
    ]
    assert "PAUSED" in page.locator("#by-provider tr", has_text="GEMINI").inner_text()
    shoot(page, "lane-paused")

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#by-provider tr", has_text="GEMINI").get_by_role("button", name="Resume").click()
    page.wait_for_selector(".notice")
    assert "GEMINI resumed" in page.inner_text(".notice")
    assert all(lane["state"] != "paused-by-operator" for lane in flow.status(store))
    context.close()
