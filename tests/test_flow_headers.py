"""Flow control learning from what responses say: x-ratelimit-* headers and token usage (pure), the
drain's Learner (what is worth a note), and the token limit in claim.lua and flow_note.lua (fakeredis
with Lua and the real Redis)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

from taskq import flow
from taskq.keys import Shard
from taskq.providers.base import ProviderConfig, json_object, send
from taskq.providers.ratelimits import Limit, Observed, current, go_duration, observe
from taskq.scheduler import Claimed, Note, claim, note
from taskq.settings import RateLimit, Settings
from taskq.store import Store
from taskq.worker.learning import RESTATE_SECONDS, Learner
from tests.support.scheduler import Scheduler
from tests.support.settings import make_settings
from tests.support.tasks import admit_tasks, request

SHARD = Shard(0)
T0 = 1_700_000_000_000

OPENAI = {
    "x-ratelimit-limit-requests": "600",
    "x-ratelimit-remaining-requests": "598",
    "x-ratelimit-reset-requests": "200ms",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-tokens": "0",
    "x-ratelimit-reset-tokens": "6m0s",
}


# -- the wire formats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("850ms", 0.85), ("0s", 0.0)],
)
def test_go_durations_read_as_openai_writes_them(text: str, seconds: float) -> None:
    assert go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1d", "1s 2s", "-1s", "1sx", "ms"])
def test_anything_else_is_no_duration(text: str) -> None:
    assert go_duration(text) is None


def test_openai_headers_give_both_limits_per_second_what_remains_and_when_it_is_full() -> None:
    seen = Observed()
    seen.headers(httpx.Headers(OPENAI))
    assert seen.requests == Limit(600, 598, 0.2) and seen.requests.per_second == 10
    assert seen.tokens == Limit(150000, 0, 360.0) and seen.tokens.per_second == 2500


def test_a_response_without_limit_headers_leaves_nothing_noted() -> None:
    seen = Observed()
    seen.headers(httpx.Headers({"content-type": "application/json", "x-request-id": "r1"}))
    assert seen.requests is None and seen.tokens is None


@pytest.mark.parametrize("bad", ["", "many", "-5", "nan", "inf"])
def test_unreadable_header_values_are_unknown_never_an_error(bad: str) -> None:
    seen = Observed()
    seen.headers(httpx.Headers({"x-ratelimit-limit-requests": bad, "x-ratelimit-remaining-requests": bad,
                                "x-ratelimit-reset-requests": bad}))  # fmt: skip
    assert seen.requests == Limit(None, None, None) and seen.requests.per_second is None


@pytest.mark.parametrize(
    ("body", "used"),
    [
        ({"usage": {"input_tokens": 12, "output_tokens": 48, "total_tokens": 60}}, 60),  # OpenAI, xAI
        ({"usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}, 14),  # Perplexity
        ({"usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 50}}, 50),  # Gemini
        ({"search_metadata": {}}, None),  # SerpApi
        ({"usage": {"total_tokens": "60"}}, None),
        ({"usage": {"total_tokens": True}}, None),
        ({"usage": {"total_tokens": -1}}, None),
        ({"usage": "lots"}, None),
    ],
)
def test_tokens_used_come_from_each_providers_usage_block(body: dict[str, Any], used: int | None) -> None:
    seen = Observed()
    seen.usage(body)
    assert seen.used == used


def test_send_and_json_object_note_into_the_call_in_progress_only() -> None:
    asyncio.run(_note_into_the_call_in_progress())


async def _note_into_the_call_in_progress() -> None:
    def answer(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=OPENAI, json={"usage": {"total_tokens": 7}})

    config = ProviderConfig("http://upstream.test", "sk", "m", 5.0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        assert current() is None
        json_object(
            "OpenAI", await send(client, "OpenAI", config, "POST", "http://upstream.test/v1/responses")
        )
        seen = observe()
        json_object(
            "OpenAI", await send(client, "OpenAI", config, "POST", "http://upstream.test/v1/responses")
        )
    assert seen.requests is not None and seen.requests.per_minute == 600 and seen.used == 7


def test_a_429_is_noted_too() -> None:
    asyncio.run(_a_429_is_noted())


async def _a_429_is_noted() -> None:
    def answer(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={**OPENAI, "x-ratelimit-remaining-requests": "0"}, json={})

    config = ProviderConfig("http://upstream.test", "sk", "m", 5.0)
    seen = observe()
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(Exception, match="429"):
            await send(client, "OpenAI", config, "POST", "http://upstream.test/v1/responses")
    assert seen.requests == Limit(600, 0, 0.2)


# -- settings ----------------------------------------------------------------------------------------


def test_tpm_is_accepted_beside_a_request_rate_or_alone() -> None:
    both = make_settings(provider_rates={"CHATGPT": {"rpm": 500, "tpm": 200000}}).provider_rate("CHATGPT")
    assert both == RateLimit(rps=500 / 60, tpm=200000)
    alone = make_settings(provider_rates={"GEMINI": {"tpm": 1000}}).provider_rate("GEMINI")
    assert alone is not None and alone.rps == 0 and alone.tpm == 1000
    lane = flow.lanes(make_settings(provider_rates={"CHATGPT": {"tpm": 6000}}), ["CHATGPT"])["CHATGPT"]
    assert (lane.rate, lane.tokens) == (0.0, 100.0)


BAD_LIMITS = [{"tpm": 0}, {"tpm": -5}, {"burst": 2}, {"rps": 0}, 0, -1, {"rpm": 6, "tpm": "x"}, {"tpm": None}]


@pytest.mark.parametrize("bad", BAD_LIMITS)
def test_a_limit_without_a_positive_rate_or_tpm_is_refused(bad: Any) -> None:
    with pytest.raises(ValidationError):
        make_settings(provider_rates={"CHATGPT": bad})


# -- the Learner -------------------------------------------------------------------------------------


def claimed(key: str, reserved: float = 0.0, shard: int = 0, task_type: str = "CHATGPT") -> Claimed:
    return Claimed(Shard(shard), "t1", "1", task_type, "{}", "o", 2, T0, "", "", 5, 1, T0, "", key,
                   reserved=reserved)  # fmt: skip


def observed(headers: dict[str, str] | None = None, used: int | None = None) -> Observed:
    seen = Observed(used=used)
    seen.headers(httpx.Headers(headers or {}))
    return seen


def learner(shards: int = 1, **rates: Any) -> tuple[Learner, str]:
    cfg = make_settings(provider_rates=rates, shards=shards)
    lanes = flow.lanes(cfg, ["CHATGPT", "GEMINI"])
    return Learner(lanes, shards), flow.fingerprint("sk-test")


def test_a_stated_limit_is_noted_once_then_again_only_when_it_changes_or_after_a_while() -> None:
    learn, fp = learner()
    limits = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "500",
              "x-ratelimit-reset-requests": "10s"}  # fmt: skip
    assert learn.note(claimed(fp), observed(limits), 100.0) == Note(limit=10.0)
    assert learn.note(claimed(fp), observed(limits), 101.0) is None  # nothing new: no Redis call
    assert learn.note(claimed(fp), observed(), 102.0) is None
    changed = {**limits, "x-ratelimit-limit-requests": "1200"}
    assert learn.note(claimed(fp), observed(changed), 103.0) == Note(limit=20.0)
    assert learn.note(claimed(fp), observed(changed), 103.0 + RESTATE_SECONDS) == Note(limit=20.0)


def test_each_shard_learns_its_share_and_is_told_on_its_own() -> None:
    learn, fp = learner(shards=2)
    limits = {"x-ratelimit-limit-requests": "600"}
    assert learn.note(claimed(fp, shard=0), observed(limits), 1.0) == Note(limit=5.0)
    assert learn.note(claimed(fp, shard=1), observed(limits), 1.0) == Note(limit=5.0)
    assert learn.note(claimed(fp, shard=1), observed(limits), 2.0) is None


def test_none_remaining_pauses_the_key_until_one_call_is_back() -> None:
    learn, fp = learner()
    empty = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "850ms"}
    assert learn.note(claimed(fp), observed(empty), 1.0) == Note(pause=0.85)  # no limit stated: the reset
    both = {**empty, "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2s"}
    assert learn.note(claimed(fp), observed(both), 1.0) == Note(pause=2.0)
    full_in_a_minute = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0",
                        "x-ratelimit-reset-requests": "1m0s"}  # fmt: skip
    assert learn.note(claimed(fp), observed(full_in_a_minute), 1.0) == Note(limit=10.0, pause=0.1)
    assert learn.note(claimed(fp), observed({**empty, "x-ratelimit-remaining-requests": "3"}), 1.0) is None


def test_tokens_are_charged_only_where_tokens_are_limited() -> None:
    learn, fp = learner()
    assert learn.note(claimed(fp), observed(used=60), 1.0) is None  # no tpm: the usage is not sent
    learn, fp = learner(CHATGPT={"tpm": 6000})
    assert learn.note(claimed(fp, reserved=100), observed(used=60), 1.0) == Note(used=60, reserved=100)
    assert learn.note(claimed(fp, reserved=100), None, 1.0) == Note(reserved=100)  # failed: refund
    learn, fp = learner()
    stated = {"x-ratelimit-limit-tokens": "6000"}
    assert learn.note(claimed(fp), observed(stated, used=60), 1.0) == Note(token_limit=100.0, used=60)
    assert learn.note(claimed(fp), observed(used=60), 2.0) == Note(used=60)  # learned: charged from now on


def test_calls_of_unpaced_lanes_or_foreign_keys_teach_nothing() -> None:
    learn, _ = learner()
    assert learn.note(claimed("kother"), observed(OPENAI, used=5), 1.0) is None
    assert Learner({}, 1).note(claimed("k"), observed(OPENAI), 1.0) is None


# -- the token limit in Redis ----------------------------------------------------------------------


@pytest.fixture
def sched(rclient: Any) -> Scheduler:
    return Scheduler(rclient)


def token_settings(tpm: float, **rates: Any) -> Settings:
    return make_settings(provider_rates={"CHATGPT": {"tpm": tpm, **rates}}, rate_slow_start=False)


def queue(store: Store, cfg: Settings, n: int) -> None:
    org = store.create_org("flow", credits=10**6, concurrency=1000, queue_limit=10**6)[0]
    admit_tasks(store, cfg, org, [request("CHATGPT", prompt=f"q{i}") for i in range(n)])


def claim_at(sched: Scheduler, cfg: Settings, clock: float, k: int = 8) -> list[Claimed]:
    lanes = flow.lanes(cfg, ["CHATGPT"])
    spec = flow.spec(cfg, lanes, clock=int(clock))
    return list(sched.run(claim(SHARD, {"CHATGPT": None}, now=T0, lease_ms=30_000, k=k, flow=spec)))


def ended(
    sched: Scheduler, cfg: Settings, task: Claimed, used: int | None, clock: float, **learned: Any
) -> None:
    lane = flow.lanes(cfg, ["CHATGPT"])["CHATGPT"]
    told = Note(used=used, reserved=task.reserved, **learned)
    assert sched.run(note(task, told, rate=lane.rate, burst=lane.burst, tokens=lane.tokens, clock=int(clock)))


def test_a_token_limit_takes_one_call_at_a_time_reserving_a_seconds_worth_until_usage_is_known(
    store: Store, sched: Scheduler
) -> None:
    cfg = token_settings(6000)  # 100 tokens/s
    queue(store, cfg, 10)
    [first] = claim_at(sched, cfg, T0)
    assert first.reserved == 100
    assert claim_at(sched, cfg, T0 + 500) == []  # a second's worth reserved
    ended(sched, cfg, first, 30, T0 + 500)  # used 30: 0.3 s' worth, the rest given back
    [second] = claim_at(sched, cfg, T0 + 500)
    assert second.reserved == 30  # what calls use, on average
    assert claim_at(sched, cfg, T0 + 700) == []
    ended(sched, cfg, second, 250, T0 + 700)  # far more than reserved: a debt until T0 + 3 s
    assert claim_at(sched, cfg, T0 + 2900) == []
    assert len(claim_at(sched, cfg, T0 + 3000)) == 1


def test_a_call_that_failed_gives_its_reservation_back(store: Store, sched: Scheduler) -> None:
    cfg = token_settings(6000)
    queue(store, cfg, 4)
    [first] = claim_at(sched, cfg, T0)
    ended(sched, cfg, first, None, T0 + 10)
    assert len(claim_at(sched, cfg, T0 + 10)) == 1


def test_the_request_rate_and_the_token_limit_both_hold(store: Store, sched: Scheduler) -> None:
    cfg = token_settings(600_000, rps=2)  # tokens plentiful: the request rate decides
    queue(store, cfg, 6)
    [first] = claim_at(sched, cfg, T0)
    ended(sched, cfg, first, 10, T0 + 1)
    assert claim_at(sched, cfg, T0 + 100) == []
    assert len(claim_at(sched, cfg, T0 + 500)) == 1


def test_a_token_limit_the_headers_stated_limits_a_lane_with_none_configured(
    store: Store, sched: Scheduler
) -> None:
    cfg = make_settings(rate_slow_start=False)
    queue(store, cfg, 10)
    first, *more = claim_at(sched, cfg, T0, k=3)
    assert len(more) == 2 and first.reserved == 0
    ended(sched, cfg, first, 300, T0 + 10, token_limit=100.0)  # 6000 tpm stated; 3 s worth used
    assert claim_at(sched, cfg, T0 + 3000) == []
    assert len(claim_at(sched, cfg, T0 + 3010)) == 1
    [row] = [r for r in flow.status(store) if r["provider"] == "CHATGPT"]
    assert row["keys"][0]["learnedTpm"] == 6000 and row["keys"][0]["tokens"] == 300


def test_a_stated_limit_caps_a_configured_rate_never_raises_it(store: Store, sched: Scheduler) -> None:
    cfg = make_settings(provider_rates={"CHATGPT": 10}, rate_slow_start=False)
    store.client.hset(SHARD.flow, mapping=flow.announcement(flow.lanes(cfg, ["CHATGPT"]), T0))
    queue(store, cfg, 10)
    [first] = claim_at(sched, cfg, T0)
    ended(sched, cfg, first, None, T0 + 1, limit=1000.0)
    [row] = [r for r in flow.status(store) if r["provider"] == "CHATGPT"]
    assert row["keys"][0]["rate"] == 10 and row["keys"][0]["statedLimit"] == 1000
    ended(sched, cfg, first, None, T0 + 2, limit=2.0)
    [row] = [r for r in flow.status(store) if r["provider"] == "CHATGPT"]
    assert row["keys"][0]["rate"] == 2


def test_a_pause_until_the_limit_resets_holds_the_key(store: Store, sched: Scheduler) -> None:
    cfg = make_settings(rate_slow_start=False)
    queue(store, cfg, 10)
    first, *_ = claim_at(sched, cfg, T0, k=2)
    ended(sched, cfg, first, None, T0 + 5, pause=0.85)
    assert claim_at(sched, cfg, T0 + 800) == []
    assert len(claim_at(sched, cfg, T0 + 855, k=1)) == 1


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tpm=st.sampled_from([600, 6000, 60000]),
    steps=st.lists(st.tuples(st.integers(0, 1500), st.integers(1, 400)), min_size=1, max_size=25),
)
def test_the_token_limit_never_admits_more_than_a_windows_worth_plus_one_call(
    store: Store, sched: Scheduler, tpm: int, steps: list[tuple[int, int]]
) -> None:
    """Calls that end before the next claim (their usage known when it decides): over any window from
    one admitted call to another, the calls before the last used at most the window's worth of tokens."""
    store.client.flushall()
    cfg = token_settings(tpm)
    queue(store, cfg, len(steps))
    tps = tpm / 60
    clock, admitted = T0, []
    for gap, used in steps:
        clock += gap
        for task in claim_at(sched, cfg, clock):
            ended(sched, cfg, task, used, clock)
            admitted.append((clock, used))
    for i in range(len(admitted)):
        for j in range(i + 1, len(admitted)):
            before_last = sum(u for _, u in admitted[i:j])
            assert before_last <= tps * (admitted[j][0] - admitted[i][0]) / 1000 + 1e-6


def test_metrics_and_the_dashboard_show_tokens_per_minute_beside_the_rate(
    store: Store, sched: Scheduler, rclient: Any
) -> None:
    from taskq.api import create_app
    from taskq.metrics import lane_families

    cfg = token_settings(6000, rps=5)
    store.client.hset(SHARD.flow, mapping=flow.announcement(flow.lanes(cfg, ["CHATGPT"]), T0))
    queue(store, cfg, 4)
    [first] = claim_at(sched, cfg, T0)
    ended(sched, cfg, first, 60, T0 + 1, limit=8.0)
    samples = {(m.name, s.value) for m in lane_families(flow.status(store)) for s in m.samples}
    for sample in [("taskq_provider_tpm_configured", 6000), ("taskq_provider_tpm", 6000),
                   ("taskq_provider_rate_configured", 5), ("taskq_provider_rate_stated", 8),
                   ("taskq_provider_tokens", 60)]:  # fmt: skip
        assert sample in samples
    console = create_app(make_settings(admin_token="admin-secret"), client=rclient).test_client()
    assert console.get("/dashboard?token=admin-secret").status_code == 303
    page = console.get("/dashboard").data.decode()
    assert "6000 tpm" in page and "configured 5/s, stated 8/s, configured 6000 tpm" in page


def test_a_pause_shorter_than_a_claims_granularity_is_left_to_the_limiter() -> None:
    learn, fp = learner()
    soon = {"x-ratelimit-limit-requests": "1200", "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s"}  # fmt: skip
    assert learn.note(claimed(fp), observed(soon), 1.0) == Note(limit=20.0)
    assert learn.note(claimed(fp), observed(soon), 2.0) is None
