"""The webhook delivery loop on a real Redis with real receivers on 127.0.0.1: sign, send, retry, record."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
import standardwebhooks

from taskq import deliveries
from taskq.deliveries import stored
from taskq.scripts import Scripts, merge_shared
from taskq.store import Store, now_ms
from taskq.webhooks.signing import generate_secret
from tests.support.clients import Client, async_client
from tests.support.deliveries import deliver_until, finish_task, log_of, states
from tests.support.env import REAL_REDIS_URL
from tests.support.receiver import Receiver, receiving
from tests.support.settings import WEBHOOK_SCHEDULE as SCHEDULE
from tests.support.settings import make_settings

pytestmark = pytest.mark.redis


@pytest.fixture
def rstore(real_redis: Client) -> Store:
    return Store(real_redis)


@pytest.fixture
def org(rstore: Store) -> tuple[str, list[str]]:
    org_id, _ = rstore.create_org("hooks", credits=1000, concurrency=10, queue_limit=100)
    return org_id, rstore.webhook_secrets(org_id)


# Tests ----------------------------------------------------------------------------------------------
def test_finished_tasks_webhooks_arrive_signed_and_are_recorded(
    real_redis: Client, rstore: Store, org: tuple[str, list[str]]
) -> None:
    org_id, secrets = org

    async def run() -> tuple[list[tuple[str, str]], Receiver]:
        async with receiving(secrets) as rx:
            made = [finish_task(rstore, org_id, rx.base + "/ok", status=s) for s in ("COMPLETED", "FAILED")]
            ids = [d for _, d in made]
            await deliver_until(
                make_settings("webhooks"),
                lambda: states(real_redis, rstore, org_id, ids) == ["delivered"] * 2,
            )
            return made, rx

    made, rx = asyncio.run(run())
    shard = rstore.org(org_id).shard
    hits = {hit.headers["webhook-id"]: hit for hit in rx.hits}
    assert len(rx.hits) == 2
    for task_id, delivery_id in made:
        hit = hits["msg_" + task_id]
        assert hit.verified
        assert hit.body.decode() == stored(real_redis, shard, delivery_id)["body"]
        event = json.loads(hit.body)
        assert event["task"]["id"] == task_id and "webhook" not in event
        task = real_redis.hgetall(shard.task(task_id))
        assert task["wh_state"] == "delivered" and int(task["delivered"]) <= now_ms()
        [entry] = log_of(real_redis, rstore, org_id, delivery_id)
        assert (entry["attempt"], entry["status"], entry["outcome"], entry["error"]) == (
            1,
            204,
            "delivered",
            None,
        )
        assert 0 < real_redis.ttl(shard.delivery_record(delivery_id)[0]) <= 3600  # the task's hash
    assert real_redis.zcard(shard.wh_due) == 0 and real_redis.zcard(shard.wh_proc) == 0


def test_a_failing_receiver_gets_one_success_per_event_with_a_stable_id_and_backoff(
    real_redis: Client, rstore: Store, org: tuple[str, list[str]]
) -> None:
    org_id, secrets = org

    async def run() -> tuple[list[str], Receiver]:
        async with receiving(secrets) as rx:
            ids = [finish_task(rstore, org_id, rx.base + "/flaky/2")[1] for _ in range(5)]
            await deliver_until(
                make_settings("webhooks"),
                lambda: states(real_redis, rstore, org_id, ids) == ["delivered"] * 5,
            )
            return ids, rx

    ids, rx = asyncio.run(run())
    by_event = rx.by_id()
    assert len(by_event) == 5
    for hits in by_event.values():
        assert len(hits) == 3 and all(h.verified for h in hits)
        gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(hits)]
        # equal jitter keeps at least half of each scheduled delay
        assert gaps[0] >= SCHEDULE[0] / 2 and gaps[1] >= SCHEDULE[1] / 2, gaps
    for delivery_id in ids:
        log = log_of(real_redis, rstore, org_id, delivery_id)
        assert [(e["attempt"], e["status"], e["outcome"]) for e in log] == [
            (1, 500, "retry"),
            (2, 500, "retry"),
            (3, 200, "delivered"),
        ]
        assert log[0]["error"] == "HTTP 500"
        task_id = stored(real_redis, rstore.org(org_id).shard, delivery_id)["task"]
        assert real_redis.hget(rstore.org(org_id).shard.task(task_id), "wh_attempts") == "3"


def test_retry_after_on_429_is_honoured(
    real_redis: Client, rstore: Store, org: tuple[str, list[str]]
) -> None:
    org_id, secrets = org

    async def run() -> Receiver:
        async with receiving(secrets) as rx:
            _, delivery_id = finish_task(rstore, org_id, rx.base + "/busy/1")
            await deliver_until(
                make_settings("webhooks"),
                lambda: states(real_redis, rstore, org_id, [delivery_id]) == ["delivered"],
            )
            return rx

    first, second = asyncio.run(run()).hits
    assert second.at - first.at >= 0.95  # Retry-After: 1 beats the 0.05 s schedule


def test_410_gone_stops_at_once(real_redis: Client, rstore: Store, org: tuple[str, list[str]]) -> None:
    org_id, secrets = org

    async def run() -> tuple[str, str, Receiver]:
        async with receiving(secrets) as rx:
            task_id, delivery_id = finish_task(rstore, org_id, rx.base + "/gone")
            await deliver_until(
                make_settings("webhooks"),
                lambda: states(real_redis, rstore, org_id, [delivery_id]) == ["failed"],
            )
            await asyncio.sleep(0.3)  # longer than the whole retry schedule
            return task_id, delivery_id, rx

    task_id, delivery_id, rx = asyncio.run(run())
    assert len(rx.hits) == 1
    assert [e["outcome"] for e in log_of(real_redis, rstore, org_id, delivery_id)] == ["gone"]
    task = real_redis.hgetall(rstore.org(org_id).shard.task(task_id))
    assert task["wh_state"] == "failed" and "delivered" not in task


def test_a_spent_schedule_marks_the_delivery_failed(
    real_redis: Client, rstore: Store, org: tuple[str, list[str]]
) -> None:
    org_id, secrets = org

    async def run() -> tuple[str, str, Receiver]:
        async with receiving(secrets) as rx:
            task_id, delivery_id = finish_task(rstore, org_id, rx.base + "/boom")
            await deliver_until(
                make_settings("webhooks"),
                lambda: states(real_redis, rstore, org_id, [delivery_id]) == ["failed"],
            )
            return task_id, delivery_id, rx

    task_id, delivery_id, rx = asyncio.run(run())
    assert len(rx.hits) == len(SCHEDULE) + 1
    log = log_of(real_redis, rstore, org_id, delivery_id)
    assert [e["outcome"] for e in log] == ["retry", "retry", "retry", "exhausted"]
    assert real_redis.hget(rstore.org(org_id).shard.task(task_id), "wh_state") == "failed"


def test_a_hanging_receiver_does_not_slow_other_receivers(
    real_redis: Client, rstore: Store, org: tuple[str, list[str]]
) -> None:
    org_id, secrets = org
    # 8 sends in flight, at most 2 per receiver; the hanging receiver never answers within the test
    settings = make_settings(
        "webhooks", webhook_concurrency=8, webhook_timeout_seconds=120.0, shutdown_grace_seconds=0.1
    )

    async def run() -> tuple[list[str], list[list[Any]], Receiver]:
        async with receiving(secrets) as slow, receiving(secrets) as fast:
            stuck = [finish_task(rstore, org_id, slow.base + "/hang")[1] for _ in range(20)]
            quick = [finish_task(rstore, org_id, fast.base + "/ok")[1] for _ in range(40)]

            def fast_done() -> bool:
                return states(real_redis, rstore, org_id, quick) == ["delivered"] * 40

            await deliver_until(settings, fast_done)
            stuck_states = states(real_redis, rstore, org_id, stuck)
            stuck_logs = [log_of(real_redis, rstore, org_id, d) for d in stuck]
            slow.release.set()
            return stuck_states, stuck_logs, slow

    stuck_states, stuck_logs, slow = asyncio.run(run())
    # Every fast delivery landed while no send to the hanging receiver had ended (each would wait out
    # the 120 s timeout): the fast ones never waited behind the slow ones.
    assert stuck_logs == [[]] * 20
    assert "delivered" not in stuck_states and len(slow.hits) <= 2


def test_during_a_secret_rotation_both_signatures_are_sent_and_each_verifies(
    real_redis: Client, rstore: Store, org: tuple[str, list[str]]
) -> None:
    org_id, [old] = org
    new = rstore.rotate_webhook_secret(org_id, overlap_seconds=3600)

    async def run() -> Receiver:
        async with receiving([new]) as rx:
            _, delivery_id = finish_task(rstore, org_id, rx.base + "/ok")
            await deliver_until(
                make_settings("webhooks"),
                lambda: states(real_redis, rstore, org_id, [delivery_id]) == ["delivered"],
            )
            return rx

    [hit] = asyncio.run(run()).hits
    assert len(hit.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        standardwebhooks.Webhook(secret).verify(hit.body, hit.headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(generate_secret()).verify(hit.body, hit.headers)


def test_a_delivery_whose_sender_died_is_sent_again_with_the_same_id(
    real_redis: Client, rstore: Store, org: tuple[str, list[str]]
) -> None:
    org_id, secrets = org
    shard = rstore.org(org_id).shard

    async def run() -> tuple[str, str, Receiver]:
        async with receiving(secrets) as rx:
            task_id, delivery_id = finish_task(rstore, org_id, rx.base + "/ok")
            client = async_client(REAL_REDIS_URL)
            now = now_ms()  # a sender claims it with a short lease, then dies without sending
            [claimed], _ = await deliveries.claim(Scripts(client), shard, now, now + 50, 10)
            await client.aclose()
            assert claimed.attempt == 1 and claimed.event == "msg_" + task_id
            await deliver_until(
                make_settings("webhooks"),
                lambda: states(real_redis, rstore, org_id, [delivery_id]) == ["delivered"],
            )
            return task_id, delivery_id, rx

    task_id, delivery_id, rx = asyncio.run(run())
    [hit] = rx.hits
    assert hit.headers["webhook-id"] == "msg_" + task_id
    assert [(e["attempt"], e["outcome"]) for e in log_of(real_redis, rstore, org_id, delivery_id)] == [
        (1, "lost"),
        (2, "delivered"),
    ]


async def _three_records(client: Any, shard: Any) -> list[Any]:
    """A delivery claimed, its lease reaped, claimed again; then three records: the first claim's
    retry and its late success, and the second claim's retry (the record ops, each not yet sent)."""
    scripts, now = Scripts(client), now_ms()
    [first], _ = await deliveries.claim(scripts, shard, now, now + 10, 10)
    assert await deliveries.reap(scripts, shard, now + 20) == 1
    [second], _ = await deliveries.claim(scripts, shard, now + 30, now + 60_000, 10)
    assert second.attempt == 2
    line = deliveries.log_line(now, 1, 500, "HTTP 500", 5, "retry")
    return [
        deliveries.record_op(shard, first, "retry", now=now, next_ms=now, line=line, retention_seconds=60),
        deliveries.record_op(shard, first, "delivered", now=now, line=line, retention_seconds=60),
        deliveries.record_op(shard, second, "retry", now=now, next_ms=now, line=line, retention_seconds=60),
    ]


def test_only_the_current_claim_moves_a_delivery_but_a_late_success_counts(
    real_redis: Client, rstore: Store, org: tuple[str, list[str]]
) -> None:
    org_id, _ = org
    shard = rstore.org(org_id).shard
    finish_task(rstore, org_id, "http://127.0.0.1:9/ok")

    async def run() -> list[str]:
        client = async_client(REAL_REDIS_URL)
        scripts = Scripts(client)
        results = []
        for op in await _three_records(client, shard):  # one call each
            results.append(op.parse(await scripts[op.script](keys=op.keys, args=op.args)))
        await client.aclose()
        return results

    assert asyncio.run(run()) == ["stale", "delivered", "stale"]
    assert real_redis.zcard(shard.wh_due) == 0 and real_redis.zcard(shard.wh_proc) == 0


def test_records_sharing_one_call_are_each_checked_against_their_own_claim(
    real_redis: Client, rstore: Store, org: tuple[str, list[str]]
) -> None:
    """The same three records as above, sent together as the worker batches them: same answers."""
    org_id, _ = org
    shard = rstore.org(org_id).shard
    task_id, _ = finish_task(rstore, org_id, "http://127.0.0.1:9/ok")

    async def run() -> list[str]:
        client = async_client(REAL_REDIS_URL)
        calls, members = merge_shared(await _three_records(client, shard))
        assert len(calls) == 1 and members == [[0, 1, 2]]
        [call] = calls
        replies = await Scripts(client)[call.script](keys=call.keys, args=call.args)
        await client.aclose()
        return [str(r) for r in replies]

    assert asyncio.run(run()) == ["stale", "delivered", "stale"]
    assert real_redis.zcard(shard.wh_due) == 0 and real_redis.zcard(shard.wh_proc) == 0
    task = real_redis.hgetall(shard.task(task_id))
    assert task["wh_state"] == "delivered" and task["wh_attempts"] == "1" and "delivered" in task
    counted = real_redis.hgetall(shard.metrics)
    assert counted["wh:retry"] == "3"  # each attempt's log line counts once, stale or not, in one write
    assert real_redis.hget(shard.wh_failing, "127.0.0.1:9") == "2"  # the two not delivered


def test_an_expired_task_is_not_recreated_by_its_deliveries(
    real_redis: Client, rstore: Store, org: tuple[str, list[str]]
) -> None:
    org_id, secrets = org
    shard = rstore.org(org_id).shard

    async def run() -> tuple[str, str, Receiver]:
        async with receiving(secrets) as rx:
            # A first delivery lives in its task's hash: it goes with the task, unsent.
            gone, _ = finish_task(rstore, org_id, rx.base + "/ok")
            real_redis.delete(shard.task(gone))
            # A redelivery has a record of its own: it is still sent, without the task coming back.
            expired, redelivery = finish_task(rstore, org_id, rx.base + "/ok", first=False)
            real_redis.delete(shard.task(expired))
            await deliver_until(
                make_settings("webhooks"),
                lambda: (
                    states(real_redis, rstore, org_id, [redelivery]) == ["delivered"]
                    and real_redis.zcard(shard.wh_due) == 0
                ),
            )
            return gone, expired, rx

    gone, expired, rx = asyncio.run(run())
    assert [hit.headers["webhook-id"] for hit in rx.hits] == ["msg_" + expired]
    assert real_redis.exists(shard.task(gone), shard.task(expired)) == 0
    assert real_redis.zcard(shard.wh_proc) == 0


def test_a_task_expires_only_once_its_first_delivery_is_final(
    real_redis: Client, rstore: Store, org: tuple[str, list[str]]
) -> None:
    """The first delivery lives in its task's hash: the task has no expiry while the delivery waits
    (however long its retries take), and expires the retention after it is final, with its list of
    deliveries."""
    org_id, secrets = org
    shard = rstore.org(org_id).shard

    async def run() -> tuple[str, str]:
        async with receiving(secrets) as rx:
            task_id, delivery_id = finish_task(rstore, org_id, rx.base + "/flaky/2")
            deliveries.redeliver(rstore, rstore.org(org_id), task_id)  # starts the list, no expiry yet
            assert real_redis.pttl(shard.task(task_id)) == -1
            assert real_redis.pttl(shard.task_deliveries(task_id)) == -1

            def first_final() -> bool:
                [state] = states(real_redis, rstore, org_id, [delivery_id])
                if state == "pending":  # between its retries: still no expiry
                    assert real_redis.pttl(shard.task(task_id)) == -1
                return state == "delivered"

            await deliver_until(make_settings("webhooks", retention_seconds=600), first_final)
            return task_id, delivery_id

    task_id, delivery_id = asyncio.run(run())
    for key in (shard.task(task_id), shard.task_deliveries(task_id)):
        assert 590 < real_redis.ttl(key) <= 600
    outcomes = [e["outcome"] for e in log_of(real_redis, rstore, org_id, delivery_id)]
    assert outcomes[0] == "retry" and outcomes[-1] == "delivered", (
        outcomes
    )  # the redelivery shares the flakiness


def test_a_redelivery_record_is_final_on_its_own_and_marks_its_task(
    real_redis: Client, rstore: Store, org: tuple[str, list[str]]
) -> None:
    """A delivery with a record of its own (a redelivery): delivered, it expires after the retention,
    and its task counts the attempt and shows the delivery."""
    org_id, secrets = org
    shard = rstore.org(org_id).shard

    async def run() -> tuple[str, str]:
        async with receiving(secrets) as rx:
            task_id, delivery_id = finish_task(rstore, org_id, rx.base + "/flaky/1", first=False)
            await deliver_until(
                make_settings("webhooks"),
                lambda: states(real_redis, rstore, org_id, [delivery_id]) == ["delivered"],
            )
            return task_id, delivery_id

    task_id, delivery_id = asyncio.run(run())
    assert shard.delivery_record(delivery_id) == (shard.delivery(delivery_id), "")
    assert 0 < real_redis.ttl(shard.delivery(delivery_id)) <= 3600
    assert [e["outcome"] for e in log_of(real_redis, rstore, org_id, delivery_id)] == ["retry", "delivered"]
    task = real_redis.hgetall(shard.task(task_id))
    assert (task["wh_state"], task["wh_attempts"]) == ("delivered", "2") and int(task["delivered"]) > 0
    assert not any(str(name).startswith("d_") for name in task)
