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
