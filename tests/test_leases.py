"""Lease renewal against a real Redis: a renewal extends the leases that ran half an interval or more,
not those claimed or renewed just before, and still finds the lost ones."""

from __future__ import annotations

import asyncio

import pytest

from taskq.asyncops import AsyncScheduler
from taskq.scheduler import ALL_TYPES, claim
from taskq.store import Store, now_ms
from taskq.worker.leases import Leases
from tests.support.clients import Client, async_client
from tests.support.env import REAL_REDIS_URL
from tests.support.orgs import new_org
from tests.support.settings import make_settings
from tests.support.tasks import admit_tasks, request

pytestmark = pytest.mark.redis

LEASE = 3.0  # seconds: a renewal every second; leases that ran less than 0.5 s are not due


def test_a_renewal_extends_only_the_leases_that_ran_half_an_interval(real_redis: Client) -> None:
    store = Store(real_redis)
    cfg = make_settings("worker", lease_seconds=LEASE)
    org = new_org(store).id
    shard = store.org(org).shard
    admit_tasks(store, cfg, org, [request(prompt=f"q{i}") for i in range(3)])
    lease_ms, caps = int(LEASE * 1000), {t: None for t in ALL_TYPES}

    def deadlines() -> dict[str, float]:
        return dict(real_redis.zrange(shard.proc, 0, -1, withscores=True))

    async def main() -> tuple[list[str], int, int, dict[str, float], dict[str, float]]:
        ops = AsyncScheduler(async_client(REAL_REDIS_URL))
        leases = Leases(ops, cfg)
        old, lost = await ops.run(claim(shard, caps, now=now_ms(), lease_ms=lease_ms, k=2))
        await asyncio.sleep(0.6)  # these two ran more than half an interval
        [young] = await ops.run(claim(shard, caps, now=now_ms(), lease_ms=lease_ms, k=1))
        real_redis.hset(shard.task(lost.id), "token", "another holder's")
        before = deadlines()
        idle = asyncio.create_task(asyncio.sleep(30))
        for task in (old, lost, young):
            leases.held[task.id] = (task, idle)
        gone = await leases.renew_once()
        after = deadlines()
        del leases.held[lost.id]  # its call was cancelled: the drain lets it go
        again = await leases.renew_once()  # right after: nothing is due
        idle.cancel()
        await ops.client.aclose()
        return [old.id, lost.id, young.id], gone, again, before, after

    [old, lost, young], gone, again, before, after = asyncio.run(main())
    assert gone == 1  # the lost lease is found (and its call cancelled)
    assert after[old] > before[old]  # extended
    assert after[lost] == before[lost]  # another holder's: left alone
    assert after[young] == before[young]  # not due yet: the next renewal extends it
    assert again == 0
