"""Synchronous monitor calls through the queue, on the intake's ASGI app served by uvicorn and a real
Redis: validation, concurrency shared with PROCESSING tasks, credits, headers, the deadline, a client
that leaves, and the outcome a worker's transition hands the waiting request. The worker's side is
played with the scheduler's own ops."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from taskq.errors import Code
from taskq.scheduler import fail
from taskq.store import Store
from tests.support.clients import Client
from tests.support.intake import ServedIntake
from tests.support.monitor import finish, raw_request, take, waiting
from tests.support.orgs import auth
from tests.support.scheduler import Scheduler
from tests.support.settings import make_settings
from tests.support.tasks import admit_tasks, counters, request

pytestmark = pytest.mark.redis

CHAT = {"prompt": "Which vector databases support hybrid search?", "country": "US"}


@pytest.fixture
def store(real_redis: Client, settings: Any) -> Store:
    return Store(real_redis, settings.shards)


@pytest.fixture
def intake(make_intake: Any, settings: Any) -> ServedIntake:
    return make_intake(settings)


@pytest.fixture
def http(intake: ServedIntake) -> Any:
    return intake.http


class Call(threading.Thread):
    """One monitor request on its own thread (it blocks until the call finishes)."""

    def __init__(self, intake: ServedIntake, path: str, body: Any, key: str) -> None:
        super().__init__(daemon=True)
        self.intake, self.path, self.body, self.key = intake, path, body, key
        self.response: Any = None

    def run(self) -> None:
        self.response = self.intake.post(self.path, self.body, self.key)

    def result(self) -> Any:
        self.join(30)
        assert self.response is not None, "the call did not answer"
        return self.response


def test_a_call_runs_as_a_task_above_every_async_priority_and_answers_its_result(
    intake: ServedIntake, store: Store, make_org: Any, settings: Any
) -> None:
    org, key = make_org(credits=100)
    admit_tasks(store, settings, org, [request(priority=10, prompt="async")])
    call = Call(intake, "/v1/monitor/chatgpt", {**CHAT, "include": {"markdown": True}}, key)
    call.start()
    waiting(lambda: counters(store, org)["queued"] == 2)
    [first] = take(store, org, k=1)
    assert first.priority == 11 and first.task_type == "CHATGPT", "the call is claimed before priority 10"
    assert '"markdown":true' in first.payload_json
    assert finish(store, first, {"text": "answer", "sources": [], "markdown": "**answer**"})
    got = call.result()
    assert got.status_code == 200, got.text
    assert got.json() == {
        "success": True,
        "result": {"text": "answer", "sources": [], "markdown": "**answer**"},
    }
    price = settings.price("CHATGPT") + settings.sync_surcharge
    assert got.headers["X-Credits-Charged"] == str(price) == "7"
    # remaining = balance - the async task's reservation (5)
    assert got.headers["X-Credits-Remaining"] == str(100 - price - 5)
    assert (got.headers["X-Concurrency-Limit"], got.headers["X-Concurrency-Current"]) == ("100", "1")
    assert got.headers["X-Concurrency-Remaining"] == "99"
    assert got.headers["X-Request-ID"] and int(got.headers["X-Latency-Ms"]) >= 0
    c = counters(store, org)
    assert (c["credits"], c["reserved"], c["inflight"], c["queued"]) == (100 - price, 5, 0, 1)


def test_invalid_bodies_get_400_with_field_errors_and_admit_nothing(
    http: Any, store: Store, make_org: Any
) -> None:
    org, key = make_org()
    cases = [
        ("/v1/monitor/chatgpt", {**CHAT, "temperature": 1}, "temperature"),
        ("/v1/monitor/chatgpt", {"prompt": "", "country": "US"}, "prompt"),
        ("/v1/monitor/gemini", {"prompt": "hi", "country": "us"}, "country"),
        (
            "/v1/monitor/perplexity",
            {"prompt": "hi", "country": "US", "include": {"pdf": True}},
            "include.pdf",
        ),
        ("/v1/monitor/google", {"country": "US"}, "body"),
        ("/v1/monitor/google/news", {"query": "x", "country": "US", "pages": 11}, "pages"),
        ("/v1/monitor/grok", ["not", "an", "object"], "body"),
    ]
    for path, body, field in cases:
        got = http.post(path, json=body, headers=auth(key))
        assert got.status_code == 400, (path, got.json())
        error = got.json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and isinstance(error["details"], list), error
        assert field in [d["field"] for d in error["details"]], (field, error)
        assert all(set(d) == {"field", "message"} for d in error["details"])
        assert "X-Concurrency-Limit" not in got.headers, "concurrency headers only once validation passed"
    not_json = http.post(
        "/v1/monitor/chatgpt", content=b"{", headers={**auth(key), "Content-Type": "application/json"}
    )
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "VALIDATION_ERROR"
    c = counters(store, org)
    assert (c["queued"], c["reserved"], c["inflight"]) == (0, 0, 0)


def test_a_call_over_the_concurrency_its_processing_tasks_use_gets_429_at_once(
    intake: ServedIntake, store: Store, make_org: Any, settings: Any
) -> None:
    org, key = make_org(concurrency=2)
    admit_tasks(store, settings, org, [request(prompt=f"a{i}") for i in range(3)])
    running = take(store, org)
    assert len(running) == 2, "the org's two slots are taken by PROCESSING async tasks"
    http = intake.http
    started = time.monotonic()
    got = http.post("/v1/monitor/chatgpt", json=CHAT, headers=auth(key))
    assert got.status_code == 429 and got.json()["error"]["code"] == "CONCURRENCY_LIMIT_EXCEEDED", got.json()
    assert time.monotonic() - started < 5, "refused at once, not after waiting"
    headers = got.headers
    assert (headers["X-Concurrency-Limit"], headers["X-Concurrency-Current"]) == ("2", "2")
    assert headers["X-Concurrency-Remaining"] == "0" and "X-Credits-Charged" not in headers
    c = counters(store, org)
    assert (c["queued"], c["inflight"], c["reserved"]) == (1, 2, 15), "nothing admitted, nothing reserved"

    assert finish(store, running[0], {"text": "done", "sources": []})
    call = Call(intake, "/v1/monitor/chatgpt", CHAT, key)  # one slot free again: admitted
    call.start()
    waiting(lambda: counters(store, org).get("q1") == 1 and int(store.org_fields(org).get("q11", 0)) == 1)
    second = http.post("/v1/monitor/gemini", json={"prompt": "hi", "country": "US"}, headers=auth(key))
    assert second.status_code == 429, "a waiting call holds its slot before any worker takes it"
    assert second.headers["X-Concurrency-Current"] == "2"
    [sync_task] = take(store, org, k=1)
    assert sync_task.priority == 11
    assert finish(store, sync_task, {"text": "sync", "sources": []})
    assert call.result().status_code == 200


def test_insufficient_credits_is_403_with_concurrency_headers_and_a_burst_never_overdraws(
    intake: ServedIntake, store: Store, make_org: Any
) -> None:
    org, key = make_org(credits=20)  # room for two calls of 7, not three
    calls = [Call(intake, "/v1/monitor/chatgpt", CHAT, key) for _ in range(3)]
    for call in calls:
        call.start()
    waiting(lambda: sum(1 for c in calls if c.response is not None) == 1)
    refused = next(c.response for c in calls if c.response is not None)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert refused.headers["X-Concurrency-Limit"] == "100" and "X-Credits-Charged" not in refused.headers
    assert counters(store, org)["reserved"] == 14
    for task in take(store, org):
        assert finish(store, task, {"text": "ok", "sources": []})
    answered = [c.result() for c in calls]
    assert sorted(r.status_code for r in answered) == [200, 200, 403]
    assert counters(store, org)["credits"] == 6 and counters(store, org)["reserved"] == 0


def test_a_failed_call_costs_nothing_and_says_why(intake: ServedIntake, store: Store, make_org: Any) -> None:
    org, key = make_org(credits=100)
    call = Call(intake, "/v1/monitor/copilot", {"prompt": "x", "country": "US"}, key)
    call.start()
    waiting(lambda: counters(store, org)["queued"] == 1)
    [task] = take(store, org)
    op = fail(task, Code.PROVIDER_UNAVAILABLE, "SerpApi answered 503 (gave up after 5 attempts)",
              now=int(time.time() * 1000), retention=3600)  # fmt: skip
    assert Scheduler(store.client).run(op)
    got = call.result()
    assert got.status_code == 500 and got.json()["error"]["code"] == "INTERNAL_SERVER_ERROR"
    assert got.json()["error"]["message"] == "Maximum retries exceeded"
    assert got.json()["error"]["details"]["reason"] == "PROVIDER_UNAVAILABLE"
    assert "X-Credits-Charged" not in got.headers and got.headers["X-Concurrency-Limit"] == "100"
    c = counters(store, org)
    assert (c["credits"], c["reserved"], c["inflight"]) == (100, 0, 0)


def test_no_worker_in_time_is_500_maximum_timeout_and_the_call_is_canceled_uncharged(
    make_intake: Any, make_org: Any, store: Store
) -> None:
    intake = make_intake(make_settings(sync_timeout_seconds=0.5))
    org, key = make_org(credits=50)
    got = intake.post("/v1/monitor/chatgpt", CHAT, key)
    assert got.status_code == 500, got.text
    assert got.json()["error"] == {**got.json()["error"], "code": "INTERNAL_SERVER_ERROR",
                                 "message": "Maximum timeout (0.5 seconds) exceeded"}  # fmt: skip
    c = counters(store, org)
    assert (c["credits"], c["reserved"], c["queued"], c["inflight"]) == (50, 0, 0, 0)
    assert int(store.org_fields(org).get("q11", 0)) == 0
    assert take(store, org) == [], "a call whose client was answered never runs"


def test_a_client_that_leaves_cancels_its_call_queued_at_once_running_at_completion_uncharged(
    intake: ServedIntake, store: Store, make_org: Any
) -> None:
    org_id, key = make_org(credits=50)
    queued = raw_request(intake.base, key, CHAT)
    waiting(lambda: int(store.org_fields(org_id).get("q11", 0)) == 1)
    assert counters(store, org_id)["reserved"] == 7
    queued.close()
    waiting(
        lambda: int(store.org_fields(org_id).get("q11", 0)) == 0 and counters(store, org_id)["reserved"] == 0
    )
    assert take(store, org_id) == [], "a canceled call never runs"

    running = raw_request(intake.base, key, CHAT)
    waiting(lambda: int(store.org_fields(org_id).get("q11", 0)) == 1)
    [task] = take(store, org_id)
    running.shutdown(socket.SHUT_WR)  # the client hangs up while a worker has the call
    waiting(lambda: store.client.hget(store.org(org_id).shard.task(task.id), "cancel") == "1")
    running.close()
    assert finish(store, task, {"text": "too late", "sources": []}), "the transition applies..."
    record = store.client.hmget(store.org(org_id).shard.task(task.id), ["status", "charged"])
    assert record == ["CANCELED", "0"], "...as a cancellation, not charged"
    c = counters(store, org_id)
    assert (c["credits"], c["reserved"], c["inflight"]) == (50, 0, 0)


def test_clearing_the_async_queue_leaves_waiting_calls_alone(
    intake: ServedIntake, store: Store, make_org: Any, settings: Any
) -> None:
    org, key = make_org()
    admit_tasks(store, settings, org, [request(prompt=f"a{i}") for i in range(3)])
    call = Call(intake, "/v1/monitor/chatgpt", CHAT, key)
    call.start()
    waiting(lambda: counters(store, org)["queued"] == 4)
    cleared = intake.http.delete("/v1/async/queue", headers=auth(key)).json()
    assert cleared["cleared"] == 3
    status = intake.http.get("/v1/async/status", headers=auth(key)).json()
    assert status["queuedTasks"] == 0 and status["concurrency"]["used"] == 1
    [task] = take(store, org)
    assert task.priority == 11 and finish(store, task, {"text": "kept", "sources": []})
    assert call.result().json()["result"]["text"] == "kept"


def test_monitor_paths_map_to_their_task_types_and_unconfigured_providers_are_refused(
    make_intake: Any, make_org: Any
) -> None:
    http = make_intake(make_settings(openai_api_key=None)).http
    _, key = make_org()
    got = http.post("/v1/monitor/chatgpt", json=CHAT, headers=auth(key))
    assert got.status_code == 400
    assert got.json()["error"]["details"][0]["message"].endswith("set TASKQ_OPENAI_API_KEY")
    assert http.post("/v1/monitor/bing", json=CHAT, headers=auth(key)).status_code == 404
    wrong = http.get("/v1/monitor/chatgpt", headers=auth(key))
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_countries_and_states(http: Any, make_org: Any) -> None:
    _, key = make_org()
    every = http.get("/v1/countries", headers=auth(key))
    assert (
        every.status_code == 200
        and "US" in every.json()
        and len(every.json()) == len(set(every.json())) > 200
    )
    assert all(len(c) == 2 and c.isupper() for c in every.json())
    for model in ("chatgpt", "aioverview", "google", "GEMINI", "google_news"):
        got = http.get(f"/v1/countries?model={model}", headers=auth(key))
        assert got.status_code == 200 and set(got.json()) <= set(every.json()) and "DE" in got.json(), model
    bad = http.get("/v1/countries?model=altavista", headers=auth(key))
    assert bad.status_code == 400 and bad.json()["error"]["details"][0]["field"] == "model"
    us = http.get("/v1/states?country=US", headers=auth(key)).json()
    assert len(us) == 51 and {"code": "CA", "name": "California"} in us
    assert http.get("/v1/states", headers=auth(key)).json() == us, "no country: the US (the reference client)"
    assert http.get("/v1/states?country=DE", headers=auth(key)).json() == []
    assert http.get("/v1/states?country=usa", headers=auth(key)).status_code == 400
    assert http.get("/v1/countries").status_code == 401


def test_every_response_carries_request_id_and_latency(http: Any, make_org: Any) -> None:
    _, key = make_org()
    responses = [
        http.get("/v1/countries", headers=auth(key)),
        http.get("/v1/states"),
        http.post("/v1/monitor/chatgpt", json={}, headers=auth(key)),
        http.get("/v1/monitor/chatgpt", headers=auth(key)),
        http.get("/v1/nothing-here"),
        http.get("/healthz"),
        http.post(
            "/v1/monitor/google/goto", json={"url": "https://evil.example/goto?url=x"}, headers=auth(key)
        ),
    ]
    for got in responses:
        assert got.headers.get("X-Request-ID") and got.headers["X-Latency-Ms"].isdigit(), got.status_code
    echoed = http.get("/v1/countries", headers={**auth(key), "X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
