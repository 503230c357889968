"""Flow control learning from responses, end to end: drains on a real Redis against the provider
simulator, which states its limit in OpenAI's x-ratelimit-* headers on every response; and a
tokens-per-minute limit charged with the usage the simulator reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from taskq import flow
from taskq.store import Store
from tests.support.clients import Client
from tests.support.drain import run_drain
from tests.support.orgs import new_org
from tests.support.settings import make_settings
from tests.support.tasks import admit_tasks, request, status_of
from tests.support.upstream import Upstream

pytestmark = [pytest.mark.redis]

TOKENS_PER_CALL = 60  # the simulator's OpenAI usage.total_tokens


@pytest.fixture
def hstore(real_redis: Client) -> Store:
    return Store(real_redis)


@pytest.fixture
def simulator(make_upstream: Callable[..., Upstream]) -> Callable[..., Upstream]:
    return lambda **limits: make_upstream(0.05, simulator=True, **limits)


def completed(store: Store, org: str, ids: list[str]) -> Callable[[], bool]:
    return lambda: all(status_of(store, org, i) == "COMPLETED" for i in ids)


def chatgpt_row(store: Store) -> dict[str, Any]:
    [row] = [r for r in flow.status(store) if r["provider"] == "CHATGPT"]
    [key] = row["keys"]
    return dict(key)


def test_a_limit_learned_from_the_headers_of_successes_keeps_429s_rare(
    hstore: Store, simulator: Callable[..., Upstream]
) -> None:
    """No rate configured, 150 tasks at 150 in flight against 30 req/s: the first answers state the
    limit, the key is paced at it, and at most 10% of the upstream calls are 429s."""
    sim = simulator(rate_limit=30)
    cfg = make_settings("drain", upstream=sim.url)
    org = new_org(hstore, "flow", credits=10**6, concurrency=1000, queue_limit=10**6).id
    ids = admit_tasks(hstore, cfg, org, [request(prompt=f"q{i}") for i in range(150)])
    run_drain(cfg, completed(hstore, org, ids), concurrency=150, timeout=90)
    assert {status_of(hstore, org, i) for i in ids} == {"COMPLETED"}
    calls = sim.simulator_calls()
    assert len(sim.simulator_calls(429)) <= 0.10 * len(calls), (len(sim.simulator_calls(429)), len(calls))
    key = chatgpt_row(hstore)
    assert key["statedLimit"] == 30 and key["configuredRate"] is None
    assert key["rate"] is not None and key["rate"] <= 30


def test_a_tokens_per_minute_limit_holds_over_every_window(
    hstore: Store, simulator: Callable[..., Upstream]
) -> None:
    """14,400 tokens/min (240/s, four 60-token calls a second), no request rate: over any window from
    one call to another the upstream sees at most the window's worth of tokens plus one call's (and a
    quarter second's worth for the way from the claim to the simulator)."""
    sim = simulator()
    cfg = make_settings("drain", upstream=sim.url, provider_rates={"CHATGPT": {"tpm": 14_400}})
    org = new_org(hstore, "flow", credits=10**6, concurrency=1000, queue_limit=10**6).id
    ids = admit_tasks(hstore, cfg, org, [request(prompt=f"q{i}") for i in range(20)])
    run_drain(cfg, completed(hstore, org, ids), concurrency=20, timeout=90)
    assert {status_of(hstore, org, i) for i in ids} == {"COMPLETED"}
    arrivals = sorted(c[0] for c in sim.simulator_calls(200))
    assert len(arrivals) == 20
    per_ms = 14_400 / 60 / 1000
    for i in range(len(arrivals)):
        for j in range(i + 1, len(arrivals)):
            tokens = TOKENS_PER_CALL * (j - i + 1)
            allowed = per_ms * (arrivals[j] - arrivals[i] + 250) + TOKENS_PER_CALL
            assert tokens <= allowed, (i, j, arrivals[j] - arrivals[i])
    key = chatgpt_row(hstore)
    assert key["configuredTpm"] == 14_400 and key["tpm"] == 14_400 and key["tokens"] == 20 * TOKENS_PER_CALL


@pytest.mark.parametrize("headers", [True, False])
def test_successes_alone_teach_the_limit_when_the_provider_states_it(
    hstore: Store, simulator: Callable[..., Upstream], headers: bool
) -> None:
    """Three calls, well under the limit: no 429 ever; the limit is known only from the headers."""
    sim = simulator(rate_limit=30, limit_headers=headers)
    cfg = make_settings("drain", upstream=sim.url)
    org = new_org(hstore, "flow", credits=10**6, concurrency=1000, queue_limit=10**6).id
    ids = admit_tasks(hstore, cfg, org, [request(prompt=f"q{i}") for i in range(3)])
    run_drain(cfg, completed(hstore, org, ids), concurrency=3, timeout=60)
    assert sim.simulator_calls(429) == []
    key = chatgpt_row(hstore)
    assert key["statedLimit"] == (30 if headers else None)
