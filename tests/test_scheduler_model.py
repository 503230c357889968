"""Property test: any interleaving of admissions, claims, acks and releases matches a reference model.

The model is the specification in a few lines: the next task is the queued task of an eligible org
(below its concurrency) and an eligible type (below its provider cap) with the smallest
(10 - priority, org's turn, arrival); an org gets a turn at its first admission and a new one,
at the back, each time it is served. So zero priority inversions and round-robin within a band.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import fakeredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskq.scheduler import Claimed, claim, complete, release
from taskq.store import Store
from tests.support.clients import fake_client
from tests.support.scheduler import Scheduler
from tests.support.settings import make_settings
from tests.support.tasks import admit_tasks, counters, request

TYPES = ["CHATGPT", "GEMINI", "PERPLEXITY"]
CAPS: dict[str, int | None] = {"CHATGPT": 3, "GEMINI": None, "PERPLEXITY": 1}
COST = {"CHATGPT": 5, "GEMINI": 4, "PERPLEXITY": 4}
CREDITS = 1_000_000


@dataclass
class Task:
    id: str
    org: int
    type: str
    prio: int
    arrival: int
    status: str = "QUEUED"


@dataclass
class Model:
    concurrency: list[int]
    tasks: dict[str, Task] = field(default_factory=dict)
    turn: dict[int, int] = field(default_factory=dict)
    rr: int = 0
    arrivals: int = 0

    def admit(self, org: int, ids: list[str], specs: list[tuple[str, int]]) -> None:
        for task_id, (ttype, prio) in zip(ids, specs, strict=True):
            self.arrivals += 1
            self.tasks[task_id] = Task(task_id, org, ttype, prio, self.arrivals)
        if org not in self.turn:
            self.rr += 1
            self.turn[org] = self.rr

    def inflight(self, org: int) -> int:
        return sum(1 for t in self.tasks.values() if t.org == org and t.status == "PROCESSING")

    def claim(self, k: int) -> list[str]:
        out = []
        for _ in range(k):
            busy = {ttype: sum(1 for t in self.tasks.values() if t.type == ttype and t.status == "PROCESSING")
                    for ttype in TYPES}  # fmt: skip
            eligible = [
                t for t in self.tasks.values()
                if t.status == "QUEUED" and self.inflight(t.org) < self.concurrency[t.org]
                and (CAPS[t.type] is None or busy[t.type] < (CAPS[t.type] or 0))
            ]  # fmt: skip
            if not eligible:
                break
            best = min(eligible, key=lambda t: (10 - t.prio, self.turn[t.org], t.arrival))
            best.status = "PROCESSING"
            self.rr += 1
            self.turn[best.org] = self.rr
            out.append(best.id)
        return out

    def expected_counters(self, org: int) -> dict[str, int]:
        mine = [t for t in self.tasks.values() if t.org == org]
        queued = [t for t in mine if t.status == "QUEUED"]
        counts = {
            "credits": CREDITS - sum(COST[t.type] for t in mine if t.status == "COMPLETED"),
            "reserved": sum(COST[t.type] for t in mine if t.status in ("QUEUED", "PROCESSING")),
            "queued": len(queued),
            "inflight": sum(1 for t in mine if t.status == "PROCESSING"),
        }
        counts.update({f"q{p}": sum(1 for t in queued if t.prio == p) for p in range(1, 11)})
        return counts


task_spec = st.tuples(st.sampled_from(TYPES), st.integers(min_value=1, max_value=4))
operation = st.one_of(
    st.tuples(st.just("admit"), st.integers(0, 2), st.lists(task_spec, min_size=1, max_size=4)),
    st.tuples(st.just("claim"), st.integers(1, 3)),
    st.tuples(st.just("ack"), st.integers(0, 1000)),
    st.tuples(st.just("release"), st.integers(0, 1000)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    concurrency=st.lists(st.integers(min_value=1, max_value=3), min_size=3, max_size=3),
    ops=st.lists(operation, min_size=5, max_size=40),
)
def test_claims_follow_the_model_and_counters_stay_exact(
    concurrency: list[int], ops: list[tuple[Any, ...]]
) -> None:
    client = fake_client(server=fakeredis.FakeServer())
    store, cfg, sched = Store(client), make_settings(), Scheduler(client)
    orgs = [store.create_org(f"o{i}", credits=CREDITS, concurrency=c, queue_limit=10_000)[0]
            for i, c in enumerate(concurrency)]  # fmt: skip
    shard = store.org(orgs[0]).shard
    model = Model(concurrency)
    held: dict[str, Claimed] = {}
    now = 1_000
    for op in ops:
        now += 1
        if op[0] == "admit":
            org, specs = int(op[1]), list(op[2])
            ids = admit_tasks(store, cfg, orgs[org], [request(t, p) for t, p in specs])
            model.admit(org, ids, specs)
        elif op[0] == "claim":
            got = sched.run(claim(shard, CAPS, now=now, lease_ms=30_000, k=int(op[1])))
            assert [t.id for t in got] == model.claim(int(op[1]))
            held.update({t.id: t for t in got})
        elif held:
            task = held.pop(sorted(held)[int(op[1]) % len(held)])
            if op[0] == "ack":
                assert sched.run(complete(task, {}, now=now, retention=60))
                model.tasks[task.id].status = "COMPLETED"
            else:
                assert sched.run(release(task, now=1, retention=60))
                model.tasks[task.id].status = "QUEUED"
        for index, org_id in enumerate(orgs):
            assert counters(store, org_id) == model.expected_counters(index)
    client.close()
