"""Webhook deliveries for the tests: outbox records as the completing script writes them, the delivery
loop run until a condition holds, and reads of delivery records."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from taskq import deliveries
from taskq.deliveries import attempt_log, stored
from taskq.keys import first_delivery
from taskq.redistypes import Value
from taskq.schemas.tasks import TaskRecord, event_view
from taskq.settings import Settings
from taskq.store import Store, now_ms
from taskq.worker.webhook_loop import run_deliveries
from tests.support.clients import Client, async_client, inspected
from tests.support.env import REAL_REDIS_URL


def finish_task(
    store: Store, org_id: str, url: str | None, *, status: str = "COMPLETED", first: bool = True
) -> tuple[str, str]:
    """A finished task with its first delivery queued per the outbox contract (in the task hash), or
    with first=False a delivery of its own as a redelivery has; returns (task id, delivery id)."""
    client, shard = inspected(store.client), store.org(org_id).shard
    task_id, now = str(uuid.uuid4()), now_ms()
    delivery_id = first_delivery(task_id) if first else deliveries.new_delivery_id()
    fields: dict[str, Any] = {
        "org": org_id,
        "type": "GOOGLE",
        "status": status,
        "prio": 5,
        "created": now - 2000,
        "payload": json.dumps({"query": "taskq"}),
        "webhook": url or "",
        "cost": 3,
        "charged": 3 if status == "COMPLETED" else 0,
        "attempts": 1,
        "started": now - 1500,
        "finished": now,
    }
    if status == "COMPLETED":
        fields["result"] = json.dumps({"text": "ünïcode answer", "sources": []})
    elif status == "FAILED":
        fields["error"] = json.dumps({"code": "PROVIDER_REJECTED", "message": "no"})
    else:
        del fields["started"], fields["finished"], fields["charged"]
    client.hset(shard.task(task_id), mapping=fields)
    if status not in ("COMPLETED", "FAILED") or not url:
        client.expire(shard.task(task_id), 3600)  # with a webhook: once the delivery is final
        return task_id, ""
    body = json.dumps(event_view(TaskRecord.from_hash(task_id, client.hgetall(shard.task(task_id)))))
    key, prefix = shard.delivery_record(delivery_id)
    record: dict[str, Value] = {
        "task": task_id,
        "org": org_id,
        "url": url,
        "event": "msg_" + task_id,
        "body": body,
        "attempts": "0",
        "state": "pending",
        "created": now,
    }
    client.hset(key, mapping={prefix + name: value for name, value in record.items()})
    client.zadd(shard.wh_due, {delivery_id: now})
    client.hset(shard.task(task_id), mapping={"wh_state": "pending", "wh_last": delivery_id})
    return task_id, delivery_id


async def deliver_until(settings: Settings, done: Callable[[], bool], timeout: float = 60.0) -> float:
    """Run the delivery loop until done() holds; returns the seconds it took."""
    client = async_client(REAL_REDIS_URL)
    stop = asyncio.Event()
    runner = asyncio.create_task(run_deliveries(client, settings, stop))
    started = time.monotonic()
    try:
        while not done():
            assert not runner.done(), runner.exception()
            assert time.monotonic() - started < timeout, "deliveries did not settle in time"
            await asyncio.sleep(0.02)
        return time.monotonic() - started
    finally:
        stop.set()
        await runner
        await client.aclose()


def states(client: Client, store: Store, org_id: str, delivery_ids: list[str]) -> list[str]:
    shard = store.org(org_id).shard
    return [stored(client, shard, delivery).get("state", "") for delivery in delivery_ids]


def log_of(client: Client, store: Store, org_id: str, delivery_id: str) -> list[dict[str, Any]]:
    fields = stored(client, store.org(org_id).shard, delivery_id)
    return [json.loads(line) for line in attempt_log(fields)]
