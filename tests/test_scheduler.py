"""Scheduler transitions: claim order, caps, leases, ack/fail/retry/release, reaping and fencing."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from taskq.errors import Code
from taskq.scheduler import (
    Claimed,
    after_error,
    claim,
    complete,
    fail,
    lost,
    reap,
    release,
    renew,
)
from taskq.scripts import merge_shared
from taskq.settings import Settings
from taskq.store import Store
from tests.support.clients import inspected
from tests.support.orgs import new_org
from tests.support.scheduler import Scheduler
from tests.support.tasks import admit_tasks, counters, nonzero, request, status_of

LEASE = 30_000
ALL = {"CHATGPT": None, "GEMINI": None, "PERPLEXITY": None}


@pytest.fixture
def sched(rclient: Any) -> Scheduler:
    return Scheduler(rclient)


def take(sched: Scheduler, store: Store, k: int = 1, now: int = 1_000, caps: Any = None) -> list[Claimed]:
    return sched.run(claim(store.org("x").shard, caps or ALL, now=now, lease_ms=LEASE, k=k))


def test_higher_priority_anywhere_is_claimed_first(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    a, b = new_org(store).id, new_org(store).id
    admit_tasks(store, settings, a, [request(priority=8), request(priority=8)])
    [p9] = admit_tasks(store, settings, b, [request("GEMINI", priority=9)])
    assert [t.id for t in take(sched, store)] == [p9]
    assert [t.priority for t in take(sched, store, k=5)] == [8, 8]


def test_orgs_take_turns_within_a_priority_and_fifo_within_an_org(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    a, b, c = new_org(store).id, new_org(store).id, new_org(store).id
    a_ids = admit_tasks(store, settings, a, [request(prompt=f"a{i}", priority=5) for i in range(4)])
    b_ids = admit_tasks(store, settings, b, [request("GEMINI", 5), request("CHATGPT", 5)])
    c_ids = admit_tasks(store, settings, c, [request(priority=9), request(priority=9)])
    got = [t.id for t in take(sched, store, k=10)]
    expected = [*c_ids, a_ids[0], b_ids[0], a_ids[1], b_ids[1], a_ids[2], a_ids[3]]
    assert got == expected


def test_claim_leases_the_task_and_moves_the_counters(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    org = new_org(store).id
    [tid] = admit_tasks(store, settings, org, [request(priority=3)])
    [task] = take(sched, store, now=5_000)
    assert (task.id, task.attempts, task.started_ms, task.cost) == (tid, 1, 5_000, 5)
    shard = store.org(org).shard
    assert inspected(store.client).zscore(shard.proc, tid) == 5_000 + LEASE
    assert status_of(store, org, tid) == "PROCESSING"
    assert nonzero(counters(store, org)) == {"credits": 10_000, "reserved": 5, "inflight": 1}
    assert store.client.hget(shard.pinflight, "CHATGPT") == "1"
    assert store.client.zcard(shard.ready("CHATGPT")) == 0


def test_org_at_its_concurrency_is_parked_until_a_task_finishes(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    busy, other = new_org(store, concurrency=1).id, new_org(store).id
    admit_tasks(store, settings, busy, [request(priority=9), request(priority=9)])
    [low] = admit_tasks(store, settings, other, [request(priority=1)])
    first, second = take(sched, store, k=5)
    assert first.org == busy and second.id == low
    assert inspected(store.client).sismember(store.org(busy).shard.capped, busy)
    assert take(sched, store) == []
    assert sched.run(complete(first, {"text": "ok"}, now=2_000, retention=60))
    [again] = take(sched, store)
    assert again.org == busy and again.priority == 9


def test_provider_at_its_cap_is_skipped(store: Store, settings: Settings, sched: Scheduler) -> None:
    org = new_org(store).id
    admit_tasks(store, settings, org, [request(priority=9), request(priority=9), request("GEMINI", 1)])
    caps = {"CHATGPT": 1, "GEMINI": None}
    assert [t.task_type for t in take(sched, store, k=5, caps=caps)] == ["CHATGPT", "GEMINI"]
    assert take(sched, store, caps=caps) == []


def test_ack_charges_credits_queues_the_webhook_and_starts_retention(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    org = new_org(store).id
    [tid] = admit_tasks(store, settings, org, [request(webhook="https://example.com/h", idem="k1")])
    [task] = take(sched, store, now=1_000)
    assert sched.run(complete(task, {"text": "answer"}, now=4_000, retention=3600))
    shard, c = store.org(org).shard, inspected(store.client)
    record = store.task(store.org(org), tid)
    assert (record.status, record.charged, record.latency_ms) == ("COMPLETED", 5, 3_000)
    assert nonzero(counters(store, org)) == {"credits": 9_995}
    delivery_id = c.hget(shard.task(tid), "wh_last")
    assert delivery_id == f"t_{tid}"  # the first delivery lives in the task hash, as fields d_*
    delivery = {k.removeprefix("d_"): v for k, v in c.hgetall(shard.task(tid)).items() if k.startswith("d_")}
    assert delivery["task"] == tid and delivery["org"] == org
    assert delivery["event"] == f"msg_{tid}" and delivery["state"] == "pending"
    assert delivery["url"] == "https://example.com/h" and delivery["attempts"] == "0"
    body = json.loads(delivery["body"])
    assert body["task"]["status"] == "COMPLETED" and body["response"] == {"text": "answer"}
    assert body["credits"] == {"creditsToCharge": 5, "creditsCharged": 5}
    assert c.zscore(shard.wh_due, delivery_id) == 4_000
    # The task's retention starts when its webhook delivery is final (wh_record.lua); its key's now.
    assert c.ttl(shard.task(tid)) == -1 and 0 < c.ttl(shard.idem(org, "k1")) <= 3600
    assert c.zcard(shard.proc) == 0


def test_acks_sharing_one_call_are_each_fenced_and_counted_once(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    org = new_org(store, concurrency=2).id
    batch = [request(prompt=str(i)) for i in range(4)]
    ids = admit_tasks(store, settings, org, batch)
    first, second = take(sched, store, k=4, now=1_000)  # the org is parked at its concurrency
    stale = Claimed(**{**{f: getattr(second, f) for f in second.__slots__}, "token": "stale"})
    ops = [
        complete(first, {"n": 1}, now=2_000, retention=60),
        complete(stale, {"n": 2}, now=2_000, retention=60),
    ]
    calls, members = merge_shared(ops)
    assert len(calls) == 1 and members == [[0, 1]]
    [call] = calls
    assert sched.scripts[call.script](keys=call.keys, args=call.args) == [1, 0]  # the stale one: nothing
    assert status_of(store, org, first.id) == "COMPLETED" and status_of(store, org, second.id) == "PROCESSING"
    assert nonzero(counters(store, org)) == {
        "credits": 9_995, "reserved": 15, "queued": 2, "inflight": 1, "q1": 2
    }  # fmt: skip
    # the finished call unparked the org: the next claim takes a queued task again
    assert [t.id for t in take(sched, store, k=4, now=3_000)] == [ids[2]]
    assert store.client.zcard(store.org(org).shard.wh_due) == 0  # no webhook url: none queued


def test_ops_share_a_call_only_with_the_same_script_keys_and_shared_arguments(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    org = new_org(store).id
    admit_tasks(store, settings, org, [request(prompt=str(i)) for i in range(3)])
    a, b, c = take(sched, store, k=3, now=1_000)
    ops = [
        complete(a, {}, now=2_000, retention=60),
        release(b, now=2_000, retention=60),
        complete(c, {}, now=2_001, retention=60),
        complete(a, {}, now=2_000, retention=99),  # another retention: another call
    ]
    calls, members = merge_shared(ops)
    assert members == [[0, 2], [1], [3]]
    assert [call.script for call in calls] == ["ack", "release", "ack"]
    item = len(ops[0].args) - ops[0].shared  # one task's arguments
    assert calls[0].args[-2 * item : -item] == ops[0].args[-item:]
    assert calls[0].args[-item:] == ops[2].args[-item:]


def test_permanent_failure_releases_the_reservation(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    org = new_org(store).id
    [tid] = admit_tasks(store, settings, org, [request(webhook="https://example.com/h")])
    [task] = take(sched, store)
    assert sched.run(fail(task, Code.PROVIDER_REJECTED, "bad prompt", now=2_000, retention=60))
    record = store.task(store.org(org), tid)
    assert record.status == "FAILED" and record.charged == 0
    assert json.loads(record.error_json or "") == {"code": "PROVIDER_REJECTED", "message": "bad prompt"}
    assert nonzero(counters(store, org)) == {"credits": 10_000}
    assert store.client.zcard(store.org(org).shard.wh_due) == 1


def _after_error(task: Claimed, now: int, retryable: bool = True, hint: float | None = None) -> Any:
    return after_error(task, Code.PROVIDER_UNAVAILABLE, "503", retryable=retryable, retry_after=hint, now=now,
                       max_attempts=2, base=1.0, cap=60.0, retention=60, rng=random.Random(1))  # fmt: skip


def test_retry_waits_then_runs_again_at_its_place_in_line(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    org = new_org(store).id
    first, second = admit_tasks(store, settings, org, [request(priority=4), request(priority=4)])
    [task] = take(sched, store, now=1_000)
    assert sched.run(_after_error(task, now=1_000, hint=5.0))
    assert status_of(store, org, first) == "QUEUED"
    assert nonzero(counters(store, org)) == {"credits": 10_000, "reserved": 10, "queued": 2, "q4": 2}
    due = inspected(store.client).zscore(store.org(org).shard.delayed, first)
    assert due == 6_000  # the provider's Retry-After beats the 0.5-1 s backoff
    [other] = take(sched, store, now=2_000)
    assert other.id == second
    [again] = take(sched, store, now=6_000)
    assert again.id == first and again.attempts == 2 and again.started_ms == 1_000


def test_retryable_error_on_the_last_attempt_fails_with_the_provider_code(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    org = new_org(store).id
    [tid] = admit_tasks(store, settings, org, [request()])
    [task] = take(sched, store, now=1_000)
    sched.run(_after_error(task, now=1_000))
    [task] = take(sched, store, now=100_000)
    assert sched.run(_after_error(task, now=100_000))
    record = store.task(store.org(org), tid)
    assert record.status == "FAILED" and record.attempts == 2
    assert json.loads(record.error_json or "")["code"] == "PROVIDER_UNAVAILABLE"
    assert nonzero(counters(store, org)) == {"credits": 10_000}


def test_release_gives_the_task_back_unharmed(store: Store, settings: Settings, sched: Scheduler) -> None:
    org = new_org(store, concurrency=1).id
    first, _ = admit_tasks(store, settings, org, [request(), request()])
    [task] = take(sched, store)
    assert sched.run(release(task, now=1, retention=60))
    assert nonzero(counters(store, org)) == {"credits": 10_000, "reserved": 10, "queued": 2, "q1": 2}
    [again] = take(sched, store)
    assert again.id == first and again.attempts == 1


def test_expired_lease_returns_to_its_original_place(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    org = new_org(store, concurrency=1).id
    first, _ = admit_tasks(store, settings, org, [request(), request()])
    [task] = take(sched, store, now=1_000)
    early = sched.run(reap(store.org(org).shard, now=1_000 + LEASE - 1, max_attempts=3, retention=60))
    assert early.requeued == 0
    reaped = sched.run(reap(store.org(org).shard, now=1_000 + LEASE, max_attempts=3, retention=60))
    assert (reaped.requeued, reaped.exhausted) == (1, [])
    assert nonzero(counters(store, org)) == {"credits": 10_000, "reserved": 10, "queued": 2, "q1": 2}
    [again] = take(sched, store, now=50_000)
    assert again.id == first and again.attempts == 2 and again.token != task.token


def test_task_lost_max_attempts_times_fails_as_worker_lost(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    org = new_org(store).id
    [tid] = admit_tasks(store, settings, org, [request(webhook="https://example.com/h")])
    shard, now = store.org(org).shard, 1_000
    for _ in range(2):
        take(sched, store, now=now)
        now += LEASE
        reaped = sched.run(reap(shard, now=now, max_attempts=2, retention=60))
    assert reaped.requeued == 0 and [t.id for t in reaped.exhausted] == [tid]
    assert sched.run(lost(reaped.exhausted[0], now=now, retention=60))
    record = store.task(store.org(org), tid)
    assert record.status == "FAILED"
    error = json.loads(record.error_json or "")
    assert error == {"code": "WORKER_LOST", "message": "worker lost the task 2 times"}
    assert nonzero(counters(store, org)) == {"credits": 10_000}
    assert store.client.zcard(shard.wh_due) == 1


def test_stalled_holder_whose_lease_was_reaped_is_fenced_out(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    org = new_org(store).id
    [tid] = admit_tasks(store, settings, org, [request()])
    shard = store.org(org).shard
    [stalled] = take(sched, store, now=1_000)
    sched.run(reap(shard, now=1_000 + LEASE, max_attempts=5, retention=60))
    [current] = take(sched, store, now=40_000)
    assert sched.run(renew(shard, [stalled, current], deadline=90_000)) == {tid}  # only the stale one lost
    assert not sched.run(complete(stalled, {"text": "late"}, now=41_000, retention=60))
    assert not sched.run(fail(stalled, Code.PROVIDER_REJECTED, "late", now=41_000, retention=60))
    assert not sched.run(release(stalled, now=1, retention=60))
    assert inspected(store.client).zscore(shard.proc, tid) == 90_000
    assert sched.run(complete(current, {"text": "fresh"}, now=42_000, retention=60))
    assert store.task(store.org(org), tid).result_json == '{"text":"fresh"}'
    assert nonzero(counters(store, org)) == {"credits": 9_995}
    assert not sched.run(complete(current, {"text": "twice"}, now=43_000, retention=60))
    assert counters(store, org)["credits"] == 9_995


def test_reaper_does_not_fail_a_task_whose_holder_renewed_meanwhile(
    store: Store, settings: Settings, sched: Scheduler
) -> None:
    org = new_org(store).id
    admit_tasks(store, settings, org, [request()])
    shard = store.org(org).shard
    [task] = take(sched, store, now=1_000)
    [exhausted] = sched.run(reap(shard, now=1_000 + LEASE, max_attempts=1, retention=60)).exhausted
    assert sched.run(renew(shard, [task], deadline=100_000)) == set()
    assert not sched.run(lost(exhausted, now=1_000 + LEASE, retention=60))
    assert sched.run(complete(task, {}, now=2_000 + LEASE, retention=60))
