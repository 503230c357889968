"""The generated Lua preamble carries the latency histogram's bounds: a call's latency lands in the
bucket the /metrics collector reads it from, whatever taskq.keys.LATENCY_BUCKETS_MS says."""

from __future__ import annotations

import bisect
from importlib import resources
from typing import Any

from taskq.keys import LATENCY_BUCKETS_MS, Shard, lua_preamble

LIB = resources.files("taskq").joinpath("lua").joinpath("metrics_lib.lua").read_text()
COUNT = "count_latency(AT_ONCE, ARGV[1], ARGV[2], tonumber(ARGV[3]))"


def test_each_latency_lands_in_the_bucket_of_its_upper_bound(rclient: Any) -> None:
    shard = Shard(0)
    script = lua_preamble() + LIB + COUNT
    samples = [0, 1, *LATENCY_BUCKETS_MS, *(b + 1 for b in LATENCY_BUCKETS_MS), 10**9]
    for ms in samples:
        rclient.eval(script, 0, shard.tag, "T", ms)
    counts = {
        int(f.rpartition(":")[2]): int(v)
        for f, v in rclient.hgetall(shard.metrics).items()
        if f.startswith("lat:")
    }
    expected: dict[int, int] = {}
    for ms in samples:
        index = bisect.bisect_left(LATENCY_BUCKETS_MS, ms)  # the first bound >= ms; past the last: its own
        expected[index] = expected.get(index, 0) + 1
    assert counts == expected
    assert int(rclient.hget(shard.metrics, "latsum:T")) == sum(samples)
    rclient.delete(shard.metrics)


def test_the_preamble_states_the_bounds_of_taskq_keys() -> None:
    bounds = "{" + ", ".join(str(b) for b in LATENCY_BUCKETS_MS) + "}"
    assert f"local LAT_BUCKETS = {bounds}" in lua_preamble()
    assert "LAT_BUCKETS =" not in LIB, "one definition: the generated one"
