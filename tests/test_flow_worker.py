"""Flow control end to end: drains on a real Redis against the provider simulator's rate limits,
quotas and revoked keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from taskq import flow
from taskq.flow import fingerprint
from taskq.settings import Settings
from taskq.simulator.app import STATE
from taskq.simulator.app import create_app as simulator_app
from taskq.store import Store
from tests.conftest import make_settings
from tests.test_end_to_end import Served
from tests.test_scheduler_support import admit_tasks, request, status_of
from tests.test_worker import run_drain

pytestmark = [pytest.mark.redis]


class LimitedSimulator(Served):
    def __init__(self, **limits: Any) -> None:
        super().__init__(simulator_app(latency=0.05, **limits))

    def calls(self, status: int | None = None) -> list[Any]:
        return [c for c in self.app[STATE].calls if status is None or c[3] == status]


@pytest.fixture
def fstore(real_redis: redis.Redis) -> Store:
    return Store(real_redis)


def settings_for(sim: LimitedSimulator, **overrides: Any) -> Settings:
    from tests.conftest import REAL_REDIS_URL

    values = {"redis_url": REAL_REDIS_URL, "upstream_base_url": sim.url, "worker_idle_wait_seconds": 0.1,
              "retry_base_seconds": 0.05, "retry_max_seconds": 0.2,
              "worker_deliver_webhooks": False}  # fmt: skip
    return make_settings(**{**values, **overrides})


def new_org(store: Store) -> str:
    return store.create_org("flow", credits=10**6, concurrency=1000, queue_limit=10**6)[0]


def settled(store: Store, org: str, ids: list[str], done: Callable[[str], bool]) -> Callable[[], bool]:
    return lambda: all(done(status_of(store, org, i)) for i in ids)


@pytest.fixture
def limited() -> Iterator[Callable[..., LimitedSimulator]]:
    sims: list[LimitedSimulator] = []

    def start(**limits: Any) -> LimitedSimulator:
        sim = LimitedSimulator(**limits).__enter__()
        sims.append(sim)
        return sim

    yield start
    for sim in sims:
        sim.__exit__()


def test_a_configured_rate_completes_every_task_that_plain_retries_would_fail(
    fstore: Store, limited: Callable[..., LimitedSimulator]
) -> None:
    """Against a 20 req/s limit, 60 tasks at 60 in flight: with flow control every one completes on its
    first attempt; without it (same run, max 2 attempts) the 429s fail some."""
    sim = limited(rate_limit=20)
    cfg = settings_for(sim, provider_rates={"CHATGPT": 20}, max_attempts=2)
    org = new_org(fstore)
    ids = admit_tasks(fstore, cfg, org, [request(prompt=f"q{i}") for i in range(60)])
    run_drain(cfg, settled(fstore, org, ids, lambda s: s == "COMPLETED"), concurrency=60, timeout=60)
    assert {status_of(fstore, org, i) for i in ids} == {"COMPLETED"}
    attempts = {fstore.client.hget(fstore.org(org).shard.task(i), "attempts") for i in ids}
    assert attempts == {"1"}

    anchor = settings_for(sim, flow_control=False, max_attempts=2)
    org = new_org(fstore)
    ids = admit_tasks(fstore, anchor, org, [request(prompt=f"r{i}") for i in range(60)])
    run_drain(anchor, settled(fstore, org, ids, lambda s: s in ("COMPLETED", "FAILED")), concurrency=60,
              timeout=60)  # fmt: skip
    assert "FAILED" in {status_of(fstore, org, i) for i in ids}


def test_a_learned_rate_completes_every_task(fstore: Store, limited: Callable[..., LimitedSimulator]) -> None:
    sim = limited(rate_limit=30)
    cfg = settings_for(sim)
    org = new_org(fstore)
    ids = admit_tasks(fstore, cfg, org, [request(prompt=f"q{i}") for i in range(90)])
    run_drain(cfg, settled(fstore, org, ids, lambda s: s == "COMPLETED"), concurrency=90, timeout=60)
    assert {status_of(fstore, org, i) for i in ids} == {"COMPLETED"}
    [row] = [r for r in flow.status(fstore) if r["provider"] == "CHATGPT"]
    [key] = row["keys"]
    if key["rateLimited"]:  # a 429 taught the limit the simulator states (OpenAI's x-ratelimit headers)
        assert key["statedLimit"] == 30


def test_an_exhausted_quota_keeps_its_tasks_queued_and_other_providers_run_on(
    fstore: Store, limited: Callable[..., LimitedSimulator]
) -> None:
    sim = limited(quota=5)
    cfg = settings_for(sim, quota_probe_seconds=3600)
    org = new_org(fstore)
    chatgpt = admit_tasks(fstore, cfg, org, [request(prompt=f"q{i}") for i in range(20)])
    gemini = admit_tasks(fstore, cfg, org, [request("GEMINI", prompt=f"g{i}") for i in range(5)])

    def quiet() -> bool:
        statuses = [status_of(fstore, org, i) for i in chatgpt + gemini]
        return statuses.count("COMPLETED") == 10 and statuses.count("PROCESSING") == 0

    run_drain(cfg, quiet, concurrency=4, timeout=30)
    assert {status_of(fstore, org, i) for i in gemini} == {"COMPLETED"}
    chatgpt_states = [status_of(fstore, org, i) for i in chatgpt]
    assert chatgpt_states.count("COMPLETED") == 5 and chatgpt_states.count("QUEUED") == 15
    [row] = [r for r in flow.status(fstore) if r["provider"] == "CHATGPT"]
    assert row["state"] == "quota-exhausted" and "quota" in row["keys"][0]["why"]


def test_a_revoked_key_of_a_pool_leaves_it_and_every_task_completes_on_the_other(
    fstore: Store, limited: Callable[..., LimitedSimulator]
) -> None:
    sim = limited(revoked=("sk-revoked",))
    cfg = settings_for(sim, openai_api_key="", openai_api_keys="sk-revoked,sk-good")
    org = new_org(fstore)
    ids = admit_tasks(fstore, cfg, org, [request(prompt=f"q{i}") for i in range(30)])
    run_drain(cfg, settled(fstore, org, ids, lambda s: s == "COMPLETED"), concurrency=10, timeout=30)
    assert {status_of(fstore, org, i) for i in ids} == {"COMPLETED"}
    [row] = [r for r in flow.status(fstore) if r["provider"] == "CHATGPT"]
    states = {k["key"]: k["state"] for k in row["keys"]}
    assert states == {fingerprint("sk-revoked"): "key-refused", fingerprint("sk-good"): "running"}
