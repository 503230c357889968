"""What a running drain tells operators: its heartbeat, its log lines, and no false "lease lost"."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskq import keys
from taskq.api import create_app
from taskq.asyncops import AsyncScheduler
from taskq.deliveries import attempt_log, stored
from taskq.logs import configure
from taskq.scripts import Op
from taskq.store import Store
from taskq.worker.drain import Drain
from taskq.worker.http import http_client
from taskq.worker.upstreams import provider_configs
from tests.support.clients import Client, async_client
from tests.support.drain import run_drain, settled
from tests.support.env import REAL_REDIS_URL
from tests.support.orgs import new_org
from tests.support.settings import make_settings
from tests.support.tasks import admit_tasks, counters, request, status_of
from tests.support.upstream import Upstream

pytestmark = pytest.mark.redis


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream(latency=0.02) as server:
        yield server


@pytest.fixture
def wstore(real_redis: Client) -> Store:
    return Store(real_redis)


@pytest.fixture
def json_logs() -> Iterator[None]:
    """The logging setup as it was before the test (which calls configure("json") itself: capsys swaps
    stderr per test phase, so a handler made during setup would write to a closed stream)."""
    root, httpx_log = logging.getLogger(), logging.getLogger("httpx")
    handlers, level, httpx_level = list(root.handlers), root.level, httpx_log.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    httpx_log.setLevel(httpx_level)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_running_drain_shows_its_heartbeat_on_the_dashboard_and_is_gone_after_stop(
    upstream: Upstream, wstore: Store
) -> None:
    cfg = make_settings("worker", upstream=upstream.url, admin_token="admin-secret")
    org = new_org(wstore).id
    admit_tasks(wstore, cfg, org, [request(prompt=f"slow:30:{i}") for i in range(3)])
    dashboard: Any = create_app(cfg, client=wstore.client).test_client()
    seen: dict[str, Any] = {}

    def three_in_flight() -> bool:
        entries = [json.loads(raw) for raw in wstore.client.hgetall(keys.WORKERS).values()]
        if not entries or entries[0]["inflight"] != 3:
            return False
        seen["entry"] = entries[0]
        data = dashboard.get("/dashboard/data", headers={"Authorization": "Bearer admin-secret"}).json
        seen["rows"] = data["workers"]
        return True

    run_drain(cfg, three_in_flight)
    entry = seen["entry"]
    assert entry["claimed"] == 3 and entry["completed"] == 0 and entry["failed"] == 0
    assert abs(entry["heartbeat"] - time.time() * 1000) < 5_000
    assert entry["rqWorker"] is None  # run in-process here, not as an RQ job
    [row] = seen["rows"]
    assert row["alive"] and row["inflight"] == 3 and row["pid"] == entry["pid"]
    assert wstore.client.hgetall(keys.WORKERS) == {}  # removed on a clean exit


class SlowOutcomeReplies(AsyncScheduler):
    """Outcome replies held back on their way: the ack applied in Redis, its caller does not know yet."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.applied = asyncio.Event()
        self.release = asyncio.Event()

    async def _replies(self, ops: list[Op[Any]]) -> list[Any]:
        replies = await super()._replies(ops)
        if any(op.script == "ack" for op in ops):
            self.applied.set()
            await self.release.wait()
        return replies


def test_a_renewal_racing_an_applied_ack_does_not_cancel_the_call(
    upstream: Upstream, wstore: Store, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_settings(
        "worker", upstream=upstream.url, lease_seconds=60.0
    )  # the background renewer stays out of the way
    org = new_org(wstore).id
    [tid] = admit_tasks(wstore, cfg, org, [request()])

    async def main() -> tuple[int, dict[str, int]]:
        client = async_client(REAL_REDIS_URL)
        http = http_client(10)
        ops = SlowOutcomeReplies(client)
        stop = asyncio.Event()
        drain = Drain(cfg, ops, http, provider_configs(cfg), concurrency=10, stop=stop)
        try:
            running = asyncio.create_task(drain.run(30))
            await asyncio.wait_for(ops.applied.wait(), 10)
            assert status_of(wstore, org, tid) == "COMPLETED" and tid in drain.leases.held
            lost = await drain.leases.renew_once()  # Redis: that lease is gone (the ack removed it)
            ops.release.set()
            stop.set()
            return lost, await running
        finally:
            await http.aclose()
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="taskq.worker"):
        lost, stats = asyncio.run(main())
    assert lost == 0
    assert stats.get("ack") == 1 and "fenced" not in stats and "errors" not in stats
    assert not [r for r in caplog.records if "lost" in r.getMessage()]


def test_retries_log_their_task_context_and_completions_stay_below_info(
    upstream: Upstream, wstore: Store, json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("json", "INFO")  # TASKQ_LOG_FORMAT=json
    cfg = make_settings("worker", upstream=upstream.url)
    org = new_org(wstore).id
    [flaky, *_] = admit_tasks(wstore, cfg, org, [request(prompt="flaky:1:a")] + [request()] * 20)
    run_drain(cfg, settled(wstore, org))
    lines = json_lines(capsys.readouterr().err)
    [retry] = [line for line in lines if line.get("task_id") == flaky and "retried" in line["message"]]
    assert retry["level"] == "INFO" and "PROVIDER_UNAVAILABLE" in retry["message"]
    assert (retry["org"], retry["provider"], retry["attempt"]) == (org, "CHATGPT", 1)
    assert not [line for line in lines if "completed" in line["message"]]  # DEBUG only
    assert not [line for line in lines if line["logger"].startswith("httpx")]  # nor a line per call
    assert counters(wstore, org)["credits"] == 10_000 - 21 * 5


def test_failed_tasks_and_webhook_failures_log_at_warning_without_secrets(
    upstream: Upstream, wstore: Store, json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("json", "INFO")
    cfg = make_settings(
        "worker", upstream=upstream.url, worker_deliver_webhooks=True, webhook_allow_networks=["127.0.0.0/8"],
        webhook_schedule_seconds=[60.0],
    )  # fmt: skip
    org = new_org(wstore).id
    hook = "http://127.0.0.1:9/hook?token=receiver-secret"  # nothing listens on port 9
    [tid] = admit_tasks(wstore, cfg, org, [request(prompt="fail:400", webhook=hook)])
    shard = wstore.org(org).shard

    def attempted() -> bool:
        last = wstore.client.hget(shard.task(tid), "wh_last")
        return bool(last) and len(attempt_log(stored(wstore.client, shard, str(last)))) >= 1

    run_drain(cfg, attempted)
    text = capsys.readouterr().err
    lines = json_lines(text)
    [failed] = [line for line in lines if line.get("task_id") == tid and "failed with" in line["message"]]
    assert failed["level"] == "WARNING" and "PROVIDER_REJECTED" in failed["message"]
    assert (failed["org"], failed["provider"], failed["attempt"]) == (org, "CHATGPT", 1)
    delivery = str(wstore.client.hget(shard.task(tid), "wh_last"))
    [webhook] = [line for line in lines if line.get("delivery_id") == delivery]
    assert webhook["level"] == "INFO" and webhook["task_id"] == tid and webhook["attempt"] == 1
    secret = json.loads(str(wstore.client.hget(shard.org(org), "wh_secrets")))[0]["secret"]
    for leaked in ("receiver-secret", "whsec_", secret.removeprefix("whsec_"), "v1,", "webhook-signature"):
        assert leaked not in text
