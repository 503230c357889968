"""Property tests on batch bodies (hypothesis): valid tasks, tasks with one field broken, junk items and
junk bodies. Whatever arrives: never a 5xx, every 4xx in the error envelope, a 200 accounts for every
item by index, and the organization's queue grows by exactly the tasks the answer says were admitted
(a refused request admits nothing, an accepted one nothing it did not report)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskq.api import create_app
from taskq.errors import Code
from taskq.store import Store
from tests.support.clients import fake_client
from tests.support.settings import make_settings

_client = fake_client()
_app = create_app(make_settings(rate_limit_per_second=10**9), client=_client)
_http = _app.test_client()
_store = Store(_client)
_org, _key = _store.create_org("fuzz", credits=10**12, concurrency=10, queue_limit=10**9)
_headers = {"Authorization": f"Bearer {_key}", "Content-Type": "application/json"}

PROMPTED = ["CHATGPT", "GEMINI", "PERPLEXITY", "GROK", "COPILOT", "AIMODE"]
QUERIED = ["GOOGLE", "GOOGLE_NEWS"]
CODES = {code.value for code in Code}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
texts = st.one_of(
    st.text(min_size=1, max_size=40),
    st.just(""),
    st.just("x" * 10_001),  # past the 10,000-character bound
    st.text(alphabet="\x00\ud7ff\ue000\U0001f600ßé", max_size=10),
)


@st.composite
def valid_tasks(draw: st.DrawFn) -> dict[str, Any]:
    task_type = draw(st.sampled_from(PROMPTED + QUERIED))
    field = "prompt" if task_type in PROMPTED else "query"
    task: dict[str, Any] = {
        "taskType": task_type,
        "payload": {
            field: draw(st.text(min_size=1, max_size=30)),
            "country": draw(st.sampled_from(["US", "DE"])),
        },
    }
    if draw(st.booleans()):
        task["priority"] = draw(st.integers(1, 10))
    if draw(st.booleans()):
        task["idempotencyKey"] = draw(st.text(min_size=1, max_size=12))
    return task


@st.composite
def broken_tasks(draw: st.DrawFn) -> dict[str, Any]:
    """A valid task with one thing wrong (or, sometimes, nothing wrong after all)."""
    task = draw(valid_tasks())
    payload = task["payload"]
    where = draw(st.sampled_from(["top", "payload", "drop", "extra", "text"]))
    if where == "top":
        task[draw(st.sampled_from(["taskType", "priority", "idempotencyKey", "payload", "webhook"]))] = draw(
            json_values
        )
    elif where == "payload":
        payload[draw(st.sampled_from([*payload, "state", "pages", "include", "gl", "uule"]))] = draw(
            json_values
        )
    elif where == "drop":
        task.pop(draw(st.sampled_from(sorted(task))))
    elif where == "extra":
        task[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    else:
        payload["prompt" if "prompt" in payload else "query"] = draw(texts)
    return task


items = st.one_of(valid_tasks(), broken_tasks(), json_values)
bodies = st.one_of(st.lists(items, max_size=12), json_values)


def _queued() -> int:
    return int(_client.hget(_store.org(_org).shard.org(_org), "queued") or 0)


def _check(raw: bytes, sent: Any = None) -> None:
    before = _queued()
    r = _http.post("/v1/async/task/batch", data=raw, headers=_headers)
    assert r.status_code < 500, r.get_data(as_text=True)[:500]
    answer = r.get_json()
    if r.status_code >= 400:
        assert answer["success"] is False and answer["error"]["code"] in CODES and answer["error"]["message"]
        assert _queued() == before, "a refused request admitted tasks"
        return
    assert r.status_code == 200 and isinstance(sent, list) and 1 <= len(sent) <= 500
    summary, results = answer["summary"], answer["results"]
    assert summary["total"] == len(sent) == len(results)
    assert [result["index"] for result in results] == list(range(len(sent)))
    admitted = [result for result in results if result["success"]]
    assert summary["succeeded"] == len(admitted) and summary["failed"] == len(sent) - len(admitted)
    for result in results:
        if result["success"]:
            assert result["task"]["status"] == "QUEUED" and result["credits"]["creditsToCharge"] > 0
        else:
            assert result["error"]["code"] in CODES and result["error"]["message"]
    assert _queued() == before + len(admitted), "the queue grew by other than what was reported"


@given(bodies)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_batch_body_gets_an_accounted_answer_and_admits_exactly_what_it_reports(body: Any) -> None:
    _check(json.dumps(body).encode(), body)


@given(st.binary(max_size=200))
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_bytes_get_a_4xx_in_the_envelope_or_an_accounted_answer(raw: bytes) -> None:
    try:
        sent = json.loads(raw)
    except ValueError:
        sent = None
    _check(raw, sent)
