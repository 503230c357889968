"""A Sentinel failover under load with TASKQ_DURABILITY=replica: a primary with one replica and three
sentinels on loopback, the primary killed -9 while clients submit and a worker runs (scenario in
tests/support/failover.py).

What is promised: no task a client was told about is lost (every answer waited until its writes were
fsynced and held by the replica), every task completes once, is charged once and has its webhook
(one webhook-id), and the intake and the workers follow the promotion by themselves, without an
operator: both resume within 30 s of it (about 6 s on a quiet machine; the bound leaves room for a
loaded one, where the sentinels' own checks and the clients' reconnects stretch). The same run with
TASKQ_DURABILITY=none, and longer runs: `python bench/failover.py` (`--stall` stops the primary with
SIGSTOP instead, so that it comes back and takes writes until it is demoted). Longer here:
TASKQ_FAILOVER_LOAD_SECONDS=10 pytest tests/test_failover.py -s
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.env import env_float
from tests.support.failover import COST, CREDITS, run_failover

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RESUME_BOUND_S = 30  # seconds from the promotion until the intake and the workers answer again
LOAD = env_float("TASKQ_FAILOVER_LOAD_SECONDS", 2.0)  # before the kill, and after the workers resumed


@pytest.mark.timeout(300)
def test_a_failover_with_replica_durability_loses_no_acknowledged_task(tmp_path: Path) -> None:
    result = run_failover("replica", tmp_path, load=LOAD, after=LOAD)
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
    # one signed webhook per task, never one announcing an outcome the failover took back
    assert result.webhook_tasks == result.admitted and result.webhooks_of_lost == 0
    assert result.webhook_ids_per_task == 1
    assert result.intake_resume_s <= RESUME_BOUND_S, "the intake did not follow the promotion in time"
    assert result.worker_resume_s <= RESUME_BOUND_S, "the workers did not follow the promotion in time"
