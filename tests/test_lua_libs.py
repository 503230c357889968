"""The shared Lua libraries agree with their Python twins (timestamps, histogram buckets)."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest

from taskq.keys import lua_preamble
from taskq.metrics import LATENCY_BUCKETS_MS
from taskq.schemas.tasks import iso_ms

LIB = resources.files("taskq").joinpath("lua").joinpath("metrics_lib.lua").read_text()


def test_latency_buckets_match_the_collector() -> None:
    table = re.search(r"LAT_BUCKETS = \{([^}]*)\}", LIB)
    assert table is not None
    assert tuple(int(x) for x in table.group(1).split(",")) == LATENCY_BUCKETS_MS


@pytest.mark.parametrize("ms", [0, 1_614_265_330_123, 1_795_941_578_536, 951_782_400_000, 4_102_444_799_999])
def test_lua_iso_timestamps_match_python(rclient: Any, ms: int) -> None:
    script = lua_preamble() + LIB + "\nreturn iso_ms(ARGV[1])"
    assert rclient.eval(script, 0, ms) == iso_ms(ms)


@pytest.mark.parametrize("fields", [1, 2, 3, 6])
def test_deferred_counts_add_up_and_expire_only_what_they_create(rclient: Any, fields: int) -> None:
    """hincr() while deferred, then flush_counts(): every field ends at its old value plus the sum of
    its deltas, whether written by HINCRBY (fewer than three fields) or by one HMGET and one HSET; a
    key given a ttl gets it only when the flush creates a field."""
    flush = """
defer_counts()
for i = 1, tonumber(ARGV[1]) do
  hincr(KEYS[1], "f" .. i, i, 60)
  hincr(KEYS[1], "f" .. i, -2 * i, 60)
  hincr(KEYS[1], "f" .. i, 10 * i, 60)
end
hincr(KEYS[1], "zero", 0, 60)
flush_counts()
return redis.call("TTL", KEYS[1])
"""
    script = lua_preamble() + LIB + flush
    rclient.delete("counts")
    rclient.hset("counts", mapping={f"f{i}": 1000 + i for i in range(1, fields + 1)})
    assert rclient.eval(script, 1, "counts", fields) == -1  # every field existed: no expiry set
    expected = {f"f{i}": str(1000 + i + 9 * i) for i in range(1, fields + 1)}
    assert rclient.hgetall("counts") == expected
    rclient.delete("counts")
    assert rclient.eval(script, 1, "counts", fields) == 60  # created by the flush: expires
    assert rclient.hgetall("counts") == {f"f{i}": str(9 * i) for i in range(1, fields + 1)}
    rclient.delete("counts")
