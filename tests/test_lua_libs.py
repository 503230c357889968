"""The shared Lua libraries: deferred counter updates."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest

from taskq.keys import lua_preamble

LIB = resources.files("taskq").joinpath("lua").joinpath("metrics_lib.lua").read_text()


@pytest.mark.parametrize("fields", [1, 2, 3, 6])
def test_deferred_counts_add_up_and_expire_only_what_they_create(rclient: Any, fields: int) -> None:
    """hincr() into a deferral, then flush_counts(): every field ends at its old value plus the sum of
    its deltas, whether written by HINCRBY (fewer than three fields) or by one HMGET and one HSET; a
    key given a ttl gets it only when the flush creates a field."""
    flush = """
local d = deferral()
for i = 1, tonumber(ARGV[1]) do
  hincr(d, KEYS[1], "f" .. i, i, 60)
  hincr(d, KEYS[1], "f" .. i, -2 * i, 60)
  hincr(d, KEYS[1], "f" .. i, 10 * i, 60)
end
hincr(d, KEYS[1], "zero", 0, 60)
flush_counts(d)
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
