"""Flow control end to end: drains on a real Redis against the provider simulator's rate limits,
quotas and revoked keys."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from taskq import flow
from taskq.flow import fingerprint
from taskq.store import Store
from tests.support.clients import Client
from tests.support.drain import run_drain
from tests.support.orgs import new_org
from tests.support.settings import make_settings
from tests.support.tasks import admit_tasks, request, status_of
from tests.support.upstream import Upstream

pytestmark = [pytest.mark.redis]

ROOMY = {"credits": 10**6, "concurrency": 1000, "queue_limit": 10**6}


@pytest.fixture
def fstore(real_redis: Client) -> Store:
    return Store(real_redis)


def settled(store: Store, org: str, ids: list[str], done: Callable[[str], bool]) -> Callable[[], bool]:
    return lambda: all(done(status_of(store, org, i)) for i in ids)


def test_a_configured_rate_completes_every_task_that_plain_retries_would_fail(
    fstore: Store, make_upstream: Callable[..., Upstream]
) -> None:
    """Against a 20 req/s limit, 60 tasks at 60 in flight: with flow control every one completes on its
    first attempt; without it (same run, max 2 attempts) the 429s fail some."""
    sim = make_upstream(0.05, simulator=True, rate_limit=20)
    cfg = make_settings("drain", upstream=sim.url, provider_rates={"CHATGPT": 20}, max_attempts=2)
    org = new_org(fstore, "flow", **ROOMY).id
    ids = admit_tasks(fstore, cfg, org, [request(prompt=f"q{i}") for i in range(60)])
    run_drain(cfg, settled(fstore, org, ids, lambda s: s == "COMPLETED"), concurrency=60, timeout=60)
    assert {status_of(fstore, org, i) for i in ids} == {"COMPLETED"}
    attempts = {fstore.client.hget(fstore.org(org).shard.task(i), "attempts") for i in ids}
    assert attempts == {"1"}

    anchor = make_settings("drain", upstream=sim.url, flow_control=False, max_attempts=2)
    org = new_org(fstore, "flow", **ROOMY).id
    ids = admit_tasks(fstore, anchor, org, [request(prompt=f"r{i}") for i in range(60)])
    run_drain(anchor, settled(fstore, org, ids, lambda s: s in ("COMPLETED", "FAILED")), concurrency=60,
              timeout=60)  # fmt: skip
    assert "FAILED" in {status_of(fstore, org, i) for i in ids}


def test_a_learned_rate_completes_every_task(fstore: Store, make_upstream: Callable[..., Upstream]) -> None:
    sim = make_upstream(0.05, simulator=True, rate_limit=30)
    cfg = make_settings("drain", upstream=sim.url)
    org = new_org(fstore, "flow", **ROOMY).id
    ids = admit_tasks(fstore, cfg, org, [request(prompt=f"q{i}") for i in range(90)])
    run_drain(cfg, settled(fstore, org, ids, lambda s: s == "COMPLETED"), concurrency=90, timeout=60)
    assert {status_of(fstore, org, i) for i in ids} == {"COMPLETED"}
    [row] = [r for r in flow.status(fstore) if r["provider"] == "CHATGPT"]
    [key] = row["keys"]
    if key["rateLimited"]:  # a 429 taught the limit the simulator states (OpenAI's x-ratelimit headers)
        assert key["statedLimit"] == 30


def test_an_exhausted_quota_keeps_its_tasks_queued_and_other_providers_run_on(
    fstore: Store, make_upstream: Callable[..., Upstream]
) -> None:
    sim = make_upstream(0.05, simulator=True, quota=5)
    cfg = make_settings("drain", upstream=sim.url, quota_probe_seconds=3600)
    org = new_org(fstore, "flow", **ROOMY).id
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
    fstore: Store, make_upstream: Callable[..., Upstream]
) -> None:
    sim = make_upstream(0.05, simulator=True, revoked=("sk-revoked",))
    cfg = make_settings("drain", upstream=sim.url, openai_api_key="", openai_api_keys="sk-revoked,sk-good")
    org = new_org(fstore, "flow", **ROOMY).id
    ids = admit_tasks(fstore, cfg, org, [request(prompt=f"q{i}") for i in range(30)])
    run_drain(cfg, settled(fstore, org, ids, lambda s: s == "COMPLETED"), concurrency=10, timeout=30)
    assert {status_of(fstore, org, i) for i in ids} == {"COMPLETED"}
    [row] = [r for r in flow.status(fstore) if r["provider"] == "CHATGPT"]
    states = {k["key"]: k["state"] for k in row["keys"]}
    assert states == {fingerprint("sk-revoked"): "key-refused", fingerprint("sk-good"): "running"}
