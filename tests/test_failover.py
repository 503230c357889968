"""A Sentinel failover under load with TASKQ_DURABILITY=replica: a primary with one replica and three
sentinels on loopback, the primary killed -9 while clients submit and a worker runs (scenario in
tests/failover_support.py).

What is promised: no task a client was told about is lost (every answer waited until its writes were
on the replica's disk too), every task completes once and is charged once, and the intake and the
workers follow the promotion by themselves: both resume within 15 s of it. The same run with
TASKQ_DURABILITY=none, and longer runs: `python bench/failover.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.failover_support import COST, CREDITS, run_failover

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.mark.timeout(300)
def test_a_failover_with_replica_durability_loses_no_acknowledged_task(tmp_path: Path) -> None:
    result = run_failover("replica", tmp_path)
    print("\n" + result.line())
    assert result.acked_before_kill > 0 and result.acked > result.acked_before_kill
    assert result.lost == 0, "a task acknowledged durable on a replica was lost in the failover"
    # every task the org has was told to a client (the keys made each resubmission find its task)...
    assert result.admitted == result.acked
    # ...and completed once, charged once
    assert result.statuses == {"COMPLETED": result.admitted}, result.statuses
    assert result.counters == {"credits": CREDITS - COST * result.completed, "reserved": 0, "queued": 0,
                               "inflight": 0}  # fmt: skip
    assert {code for code, _ in result.answers} <= {0, 200, 503}, result.answers
    assert result.intake_resume_s <= 15, "the intake did not follow the promotion in time"
    assert result.worker_resume_s <= 15, "the workers did not follow the promotion in time"
