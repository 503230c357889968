"""Concurrent synchronous calls of one process are admitted together (one pipeline of admit.lua
calls), each with its own verdict: the concurrency limit holds exactly, credits are reserved once per
call, and a server that lost its scripts still admits them (fakeredis and the real Redis)."""

from __future__ import annotations

import threading
from typing import Any

from taskq import calls
from taskq.errors import Code
from tests.support.tasks import counters, request


def admit_at_once(store: Any, settings: Any, org_id: str, n: int) -> list[Any]:
    """n admissions started together on n threads; each one's Admitted or Refused."""
    org = store.org(org_id)
    out: list[Any] = [None] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait()
        out[i] = calls.admit(store, settings, org, request(prompt=f"p{i}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return out


def test_a_burst_of_calls_gets_one_verdict_each_and_the_limit_holds(
    store: Any, make_org: Any, settings: Any
) -> None:
    org_id, _ = make_org(credits=10_000, concurrency=30)
    out = admit_at_once(store, settings, org_id, 48)
    admitted = [x for x in out if isinstance(x, calls.Admitted)]
    refused = [x for x in out if isinstance(x, calls.Refused)]
    assert len(admitted) == 30 and len(refused) == 18
    assert {x.error.code for x in refused} == {Code.CONCURRENCY_LIMIT_EXCEEDED}
    assert len({x.task_id for x in admitted}) == 30
    assert sorted(x.slots.current for x in admitted) == list(range(1, 31)), "each saw its own place"
    c = counters(store, org_id)
    assert c["reserved"] == sum(x.cost for x in admitted) and c["credits"] == 10_000
    assert int(store.org_fields(org_id)["q11"]) == 30


def test_calls_are_admitted_after_the_server_lost_its_scripts(
    store: Any, make_org: Any, settings: Any
) -> None:
    org_id, _ = make_org(credits=10_000, concurrency=100)
    assert all(isinstance(x, calls.Admitted) for x in admit_at_once(store, settings, org_id, 4))
    store.client.script_flush()
    out = admit_at_once(store, settings, org_id, 24)
    assert all(isinstance(x, calls.Admitted) for x in out), out
    assert int(store.org_fields(org_id)["q11"]) == 28
