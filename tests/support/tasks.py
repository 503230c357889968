"""Tasks and their counters: admit tasks through the real admission path, read task fields and counters."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from taskq.admission import Accepted, admit
from taskq.keys import Shard
from taskq.providers import PAYLOAD_MODELS
from taskq.schemas.tasks import TaskRequest, TaskType
from taskq.settings import Settings
from taskq.store import Store
from tests.support.clients import Client


def request(task_type: str = "CHATGPT", priority: int = 1, *, prompt: str = "hi", webhook: str | None = None,
            idem: str | None = None) -> TaskRequest:  # fmt: skip
    payload = PAYLOAD_MODELS[task_type].model_validate({"prompt": prompt, "country": "US"})
    return TaskRequest(TaskType(task_type), payload, priority, idem, webhook)


def admit_tasks(store: Store, settings: Settings, org_id: str, requests: list[TaskRequest]) -> list[str]:
    """Admit one batch through the real admission path; return the ids of the admitted tasks."""
    outcomes = admit(store, settings, store.org(org_id), list(requests))
    return [o.task["id"] for o in outcomes if isinstance(o, Accepted)]


def counters(store: Store, org_id: str) -> dict[str, int]:
    fields = store.org_fields(org_id)
    names = ["credits", "reserved", "queued", "inflight"] + [f"q{p}" for p in range(1, 11)]
    return {name: int(fields.get(name, 0)) for name in names}


def status_of(store: Store, org_id: str, task_id: str) -> str:
    return str(store.client.hget(store.org(org_id).shard.task(task_id), "status"))


def nonzero(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v}


def task_fields(client: Client, shard: Shard, ids: Iterable[str], names: list[str]) -> list[list[Any]]:
    """HMGET of the given fields for every task id, in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(shard.task(task_id), names)
    return list(pipe.execute())


def org_counters(client: Client, shard: Shard, org: str) -> dict[str, int]:
    raw = client.hgetall(shard.org(org))
    names = ("credits", "reserved", "queued", "inflight")
    return {name: int(raw.get(name, 0)) for name in names}
