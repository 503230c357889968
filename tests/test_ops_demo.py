"""The demo batch: every task type valid and realistic, exactly the intended tasks invalid."""

from __future__ import annotations

from collections import Counter

from taskq.ops.demo import demo_tasks
from taskq.schemas.tasks import TaskRequest, TaskType, parse_task

URL = "http://127.0.0.1:9999/webhooks/taskq"


def test_every_task_type_appears_with_valid_payloads_and_a_webhook() -> None:
    tasks, invalid = demo_tasks(URL, "run1")
    valid = [t for i, t in enumerate(tasks) if i not in invalid]

    parsed = [parse_task(t) for t in valid]

    assert all(isinstance(p, TaskRequest) for p in parsed), parsed
    assert set(Counter(t["taskType"] for t in valid)) == {t.value for t in TaskType}
    assert all(t["webhook"] == {"url": URL} for t in tasks)
    assert len({t["priority"] for t in valid}) == 10


def test_three_tasks_are_invalid_each_for_a_different_reason() -> None:
    tasks, invalid = demo_tasks(URL, "run1")

    assert len(invalid) == 3
    schema_errors = [i for i in invalid if isinstance(parse_task(tasks[i]), list)]
    assert len(schema_errors) == 2  # lowercase country, unknown task type
    (repeat,) = set(invalid) - set(schema_errors)
    keys = [t.get("idempotencyKey") for t in tasks[:repeat]]
    assert tasks[repeat]["idempotencyKey"] in keys  # refused at admission: key already used


def test_idempotency_keys_differ_between_runs() -> None:
    first, _ = demo_tasks(URL, "run1")
    second, _ = demo_tasks(URL, "run2")
    assert {t.get("idempotencyKey") for t in first} & {t.get("idempotencyKey") for t in second} == {None}


def test_the_synchronous_call_of_the_demo_is_a_valid_chatgpt_payload() -> None:
    from taskq.ops.demo import SYNC_CALL

    assert isinstance(parse_task({"taskType": "CHATGPT", "payload": SYNC_CALL}), TaskRequest)
