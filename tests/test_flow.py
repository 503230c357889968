"""Flow control in the claim and throttle scripts: pacing per key, pauses, quota probes, refused keys,
learned rates, and the operator's pause/resume/status (fakeredis with Lua and the real Redis)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from taskq import flow
from taskq.flow import fingerprint
from taskq.keys import Shard
from taskq.scheduler import FENCED, MUST_FAIL, THROTTLED, Claims, Refusal, claim, throttle
from taskq.settings import Settings
from taskq.store import Store
from tests.support.scheduler import Scheduler
from tests.support.settings import make_settings
from tests.support.tasks import admit_tasks, request, status_of

SHARD = Shard(0)
T0 = 1_700_000_000_000  # the flow clock of these tests (ms)


def claim_at(
    sched: Scheduler, cfg: Settings, clock: float, k: int = 16, types: tuple[str, ...] = ("CHATGPT",),
    now: int = T0,
) -> Claims:  # fmt: skip
    lanes = flow.lanes(cfg, types)
    spec = flow.spec(cfg, lanes, clock=int(clock))
    return sched.run(claim(SHARD, {t: None for t in types}, now=now, lease_ms=30_000, k=k, flow=spec))


def refuse(sched: Scheduler, cfg: Settings, task: Any, refusal: Refusal, clock: float, now: int = T0) -> int:
    lane = flow.lanes(cfg, [task.task_type])[task.task_type]
    op = throttle(task, refusal, rate=lane.rate, burst=lane.burst, pool=lane.pool, now=now, retention=3600,
                  give_up_seconds=cfg.rate_limit_give_up_seconds, probe_seconds=cfg.quota_probe_seconds,
                  clock=int(clock))  # fmt: skip
    return sched.run(op)


def queue(store: Store, cfg: Settings, n: int, task_type: str = "CHATGPT") -> tuple[str, list[str]]:
    org = store.create_org("flow", credits=10**6, concurrency=1000, queue_limit=10**6)[0]
    return org, admit_tasks(store, cfg, org, [request(task_type, prompt=f"q{i}") for i in range(n)])


@pytest.fixture
def sched(rclient: Any) -> Scheduler:
    return Scheduler(rclient)


def test_a_configured_rate_admits_one_call_per_interval_and_says_when_the_next_one_is_due(
    store: Store, sched: Scheduler
) -> None:
    cfg = make_settings("flow", provider_rates={"CHATGPT": 10})  # one call per 100 ms
    queue(store, cfg, 20)
    first = claim_at(sched, cfg, T0)
    assert len(first) == 1 and first[0].key == fingerprint("sk-test")
    held_back = claim_at(sched, cfg, T0 + 30)  # a claim may start a call up to TICK_MS (50) early
    assert len(held_back) == 0 and held_back.reopens_ms == 20
    assert len(claim_at(sched, cfg, T0 + 50)) == 1
    assert len(claim_at(sched, cfg, T0 + 1100)) == 1  # an idle lane does not bank calls beyond its burst


def test_a_burst_admits_that_many_calls_at_once(store: Store, sched: Scheduler) -> None:
    cfg = make_settings("flow", provider_rates={"CHATGPT": {"rpm": 600, "burst": 5}})
    queue(store, cfg, 20)
    assert len(claim_at(sched, cfg, T0)) == 5
    assert len(claim_at(sched, cfg, T0 + 1)) == 0
    assert len(claim_at(sched, cfg, T0 + 200)) == 2


def test_calls_spread_over_the_keys_of_a_pool_each_with_its_own_rate(store: Store, sched: Scheduler) -> None:
    cfg = make_settings(
        "flow", provider_rates={"CHATGPT": 10}, openai_api_key="", openai_api_keys="sk-a,sk-b,sk-c"
    )
    queue(store, cfg, 20)
    claimed = claim_at(sched, cfg, T0)
    assert sorted(t.key for t in claimed) == sorted(fingerprint(k) for k in ("sk-a", "sk-b", "sk-c"))


def test_other_task_types_are_claimed_while_one_lane_is_held_back(store: Store, sched: Scheduler) -> None:
    cfg = make_settings("flow", provider_rates={"CHATGPT": 1})
    queue(store, cfg, 5)
    queue(store, cfg, 5, "GEMINI")
    claimed = claim_at(sched, cfg, T0, types=("CHATGPT", "GEMINI"))
    assert sorted(t.task_type for t in claimed) == ["CHATGPT"] + ["GEMINI"] * 5


def test_a_429_pauses_the_key_and_puts_the_task_back_first_in_line_without_spending_an_attempt(
    store: Store, sched: Scheduler
) -> None:
    cfg = make_settings("flow")
    org, ids = queue(store, cfg, 3)
    [task] = claim_at(sched, cfg, T0, k=1)
    assert task.id == ids[0] and task.attempts == 1
    assert refuse(sched, cfg, task, Refusal("rate", "slow down", wait=2.0), T0 + 10) == THROTTLED
    assert status_of(store, org, ids[0]) == "QUEUED"
    paused = claim_at(sched, cfg, T0 + 1000)
    assert len(paused) == 0 and paused.reopens_ms == 1010
    again = claim_at(sched, cfg, T0 + 2010, k=1)
    assert [t.id for t in again] == [ids[0]] and again[0].attempts == 1
    [row] = [r for r in flow.status(store) if r["provider"] == "CHATGPT"]
    assert row["keys"][0]["rateLimited"] == 1


def test_a_stale_lease_cannot_throttle(store: Store, sched: Scheduler) -> None:
    cfg = make_settings("flow")
    queue(store, cfg, 1)
    [task] = claim_at(sched, cfg, T0)
    stale = type(task)(**{**{f: getattr(task, f) for f in task.__slots__}, "token": "0"})
    assert refuse(sched, cfg, stale, Refusal("rate", "slow down"), T0) == FENCED


def test_a_task_rate_limited_for_longer_than_the_give_up_time_must_fail(
    store: Store, sched: Scheduler
) -> None:
    cfg = make_settings("flow", rate_limit_give_up_seconds=60)
    queue(store, cfg, 1)
    [task] = claim_at(sched, cfg, T0)
    assert refuse(sched, cfg, task, Refusal("rate", "slow down", wait=0.1), T0, now=T0) == THROTTLED
    [task] = claim_at(sched, cfg, T0 + 5000, now=T0 + 30_000)
    assert (
        refuse(sched, cfg, task, Refusal("rate", "slow down", wait=0.1), T0 + 5000, now=T0 + 30_000)
        == THROTTLED
    )
    [task] = claim_at(sched, cfg, T0 + 10_000, now=T0 + 61_000)
    assert (
        refuse(sched, cfg, task, Refusal("rate", "slow down", wait=0.1), T0 + 10_000, now=T0 + 61_000)
        == MUST_FAIL
    )


def test_an_exhausted_quota_stops_the_key_and_lets_one_probe_through_per_interval(
    store: Store, sched: Scheduler
) -> None:
    cfg = make_settings("flow", quota_probe_seconds=60)
    org, ids = queue(store, cfg, 5)
    claimed = claim_at(sched, cfg, T0, k=2)
    assert (
        refuse(sched, cfg, claimed[0], Refusal("quota", "You exceeded your current quota"), T0) == THROTTLED
    )
    assert (
        refuse(sched, cfg, claimed[1], Refusal("quota", "You exceeded your current quota"), T0) == THROTTLED
    )
    assert {status_of(store, org, i) for i in ids} == {"QUEUED"}
    assert len(claim_at(sched, cfg, T0 + 59_000)) == 0
    probe = claim_at(sched, cfg, T0 + 60_000)
    assert len(probe) == 1 and probe[0].probe and probe[0].id == ids[0]
    assert len(claim_at(sched, cfg, T0 + 60_001)) == 0
    [row] = [r for r in flow.status(store) if r["provider"] == "CHATGPT"]
    assert row["keys"][0]["state"] == "quota-exhausted"
    assert row["keys"][0]["why"] == "You exceeded your current quota"


def test_a_refused_key_leaves_the_pool_and_the_last_key_is_never_removed(
    store: Store, sched: Scheduler
) -> None:
    cfg = make_settings("flow", openai_api_key="", openai_api_keys=["sk-bad", "sk-good"])
    queue(store, cfg, 10)
    bad, good = fingerprint("sk-bad"), fingerprint("sk-good")
    claimed = claim_at(sched, cfg, T0, k=2)
    on_bad = next(t for t in claimed if t.key == bad)
    assert refuse(sched, cfg, on_bad, Refusal("auth", "Incorrect API key provided"), T0) == THROTTLED
    assert {t.key for t in claim_at(sched, cfg, T0 + 1, k=8)} == {good}
    on_good = claim_at(sched, cfg, T0 + 2, k=1)[0]
    assert refuse(sched, cfg, on_good, Refusal("auth", "Incorrect API key provided"), T0) == MUST_FAIL
    keys = {k["key"]: k["state"] for r in flow.status(store) for k in r["keys"]}
    assert keys == {bad: "key-refused", good: "running"}


def test_an_operator_pause_holds_one_lane_until_resumed(store: Store, sched: Scheduler) -> None:
    cfg = make_settings("flow")
    queue(store, cfg, 3)
    queue(store, cfg, 3, "GEMINI")
    flow.pause(store, "chatgpt", "maintenance")
    claimed = claim_at(sched, cfg, T0, types=("CHATGPT", "GEMINI"))
    assert {t.task_type for t in claimed} == {"GEMINI"}
    [row] = [r for r in flow.status(store) if r["provider"] == "CHATGPT"]
    assert row["state"] == "paused-by-operator" and row["why"] == "maintenance"
    flow.resume(store, "CHATGPT")
    assert {t.task_type for t in claim_at(sched, cfg, T0, types=("CHATGPT", "GEMINI"))} == {"CHATGPT"}


def test_an_unknown_provider_is_a_clear_error(store: Store) -> None:
    from taskq.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="unknown provider"):
        flow.pause(store, "NOPE", "x")


def test_slow_start_paces_a_lane_with_no_known_rate_then_lets_it_run_unpaced(
    store: Store, sched: Scheduler
) -> None:
    cfg = make_settings(rate_slow_start=True)
    queue(store, cfg, 200)
    assert len(claim_at(sched, cfg, T0)) == 1  # 10 calls/s at first
    assert len(claim_at(sched, cfg, T0 + 5000, k=100)) == 100  # 10 * 2^20 calls/s: not paced any more


def test_a_429_teaches_the_limit_it_states_and_cuts_the_rate_at_most_once_a_second(
    store: Store, sched: Scheduler
) -> None:
    cfg = make_settings(rate_slow_start=True)
    queue(store, cfg, 100)
    claim_at(sched, cfg, T0)  # slow start begins
    claimed = claim_at(sched, cfg, T0 + 500, k=3)  # 10 * 2^5 = 320 calls/s by now
    refuse(sched, cfg, claimed[0], Refusal("rate", "limit", wait=0.05, limit=20.0), T0 + 500)
    fields = store.client.hgetall(SHARD.flow)
    slot = {k.rpartition(":")[2]: v for k, v in fields.items() if k.startswith("CHATGPT/")}
    assert float(slot["lcap"]) == 20.0 and float(slot["lrate"]) == 20.0  # above the stated limit: back to it
    refuse(sched, cfg, claimed[1], Refusal("rate", "limit", wait=0.05, limit=20.0), T0 + 600)
    lrate = store.client.hget(SHARD.flow, "CHATGPT/" + claimed[0].key + ":lrate")
    assert lrate is not None and float(lrate) == 20.0
    refuse(sched, cfg, claimed[2], Refusal("rate", "limit", wait=0.05, limit=20.0), T0 + 1600)
    lrate = store.client.hget(SHARD.flow, "CHATGPT/" + claimed[0].key + ":lrate")
    assert lrate is not None and float(lrate) == pytest.approx(18.0)
    slot = {
        k.rpartition(":")[2]: v
        for k, v in store.client.hgetall(SHARD.flow).items()
        if k.startswith("CHATGPT/")
    }
    assert flow.rate_now(slot, T0 + 1600) == pytest.approx(18.0)
    assert flow.rate_now(slot, T0 + 60_000) == 20.0  # additive increase, never above the stated limit


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rate=st.sampled_from([1.0, 3.0, 7.5, 20.0, 55.0]),
    burst=st.integers(min_value=1, max_value=6),
    steps=st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.integers(min_value=1, max_value=16)),
                   min_size=5, max_size=60),
)  # fmt: skip
# A claim's room and its takes once disagreed at an exact edge of the tolerance (the sixth call of a
# run refused by the take was claimed anyway, with no key).
@example(rate=55.0, burst=6, steps=[(0, 1), (19, 6), (91, 6), (91, 6), (1, 1)])
def test_the_shared_limiter_never_admits_more_than_rate_times_window_plus_burst(
    rclient: Any, rate: float, burst: int, steps: list[tuple[int, int]]
) -> None:
    """Claims at any times, of any sizes, from any number of workers (they share the one T:flow):
    in every window of W ms at most W * rate / 1000 + the effective burst calls start."""
    rclient.flushdb()
    store = Store(rclient)
    sched = Scheduler(rclient)
    cfg = make_settings("flow", provider_rates={"CHATGPT": {"rps": rate, "burst": burst}})
    queue(store, cfg, sum(k for _, k in steps))
    clock, starts = T0, []
    for gap, k in steps:
        clock += gap
        starts += [clock] * len(claim_at(sched, cfg, clock, k=k))
    # GCRA with emission interval T and tolerance tau starts at most (W + tau) / T + 1 calls in any
    # window of W ms: the rate over the window, plus the burst the tolerance allows (tau / T + 1).
    interval = 1000 / rate
    tolerance = max((burst - 1) * interval, flow.TICK_MS)
    for window in (1000, 250):
        for i, start in enumerate(starts):
            inside = sum(1 for s in starts[i:] if s < start + window)
            assert inside <= (window + tolerance) / interval + 1, (window, start, starts)


def test_metrics_and_dashboard_data_show_each_key_and_a_stopped_lane_loudly(
    store: Store, sched: Scheduler
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from taskq.api import create_app

    cfg = make_settings("flow", provider_rates={"CHATGPT": {"rpm": 600}})
    queue(store, cfg, 3)
    [task] = claim_at(sched, cfg, T0)
    refuse(sched, cfg, task, Refusal("quota", "You exceeded your current quota"), T0)
    client: Any = create_app(make_settings(admin_token="admin-secret"), client=store.client).test_client()
    text = client.get("/metrics", headers={"Authorization": "Bearer admin-secret"}).data.decode()
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip
    labels = (("key", task.key), ("provider", "CHATGPT"))
    assert found[("taskq_provider_key_state", (*labels[:1], labels[1], ("state", "quota-exhausted")))] == 1
    assert found[("taskq_provider_calls_total", labels)] == 1
    data = client.get("/dashboard/data", headers={"Authorization": "Bearer admin-secret"}).json
    [lane] = [lane for lane in data["lanes"] if lane["provider"] == "CHATGPT"]
    assert lane["state"] == "quota-exhausted"
    assert lane["keys"][0]["why"] == "You exceeded your current quota"


def test_the_lane_commands_pause_resume_and_show_a_provider(
    real_redis: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from taskq.cli import main
    from tests.support.env import REAL_REDIS_URL

    monkeypatch.setenv("TASKQ_REDIS_URL", REAL_REDIS_URL)
    assert main(["lane", "pause", "gemini", "--reason", "key rotation"]) == 0
    assert main(["lane", "status", "GEMINI"]) == 0
    out = capsys.readouterr().out
    status = json.loads(out[out.index("[") :])
    assert status[0]["state"] == "paused-by-operator" and status[0]["why"] == "key rotation"
    assert main(["lane", "resume", "GEMINI"]) == 0
    assert real_redis.hget(SHARD.flow, "GEMINI:pause") is None
    assert main(["lane", "pause", "NOPE"]) == 1
