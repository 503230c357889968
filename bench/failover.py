"""Benchmark: a Sentinel failover under load (primary killed -9, replica promoted), TASKQ_DURABILITY=none
against replica, side by side: acknowledged tasks lost, completions, time to resume.

The scenario is the one tests/test_failover.py runs (tests/support/failover.py), longer here.

    python bench/failover.py [--rounds 2] [--load 6] [--after 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from support import machine, table  # noqa: E402
from tests.support.failover import run_failover  # noqa: E402


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load", type=float, default=6.0, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=4.0, help="seconds of load after the workers resumed")
    parser.add_argument("--stall", action="store_true", help="SIGSTOP the primary instead of kill -9")
    args = parser.parse_args()
    started = time.monotonic()
    rows = []
    for round_no in range(args.rounds):
        for mode in ("none", "replica"):
            workdir = Path(tempfile.mkdtemp(prefix="taskq-bench-failover-"))
            result = run_failover(mode, workdir, args.load, args.after, stall=args.stall)
            print(result.line(), flush=True)
            rows.append(
                [
                    f"{mode} (round {round_no + 1})",
                    f"{result.acked:,}",
                    f"{result.acked_before_kill:,}",
                    str(result.lost),
                    f"{result.statuses.get('COMPLETED', 0):,} of {result.admitted:,}",
                    f"{result.promotion_s:.1f}",
                    f"{result.intake_resume_s:.1f}",
                    f"{result.worker_resume_s:.1f}",
                ]
            )
    print(f"machine: {machine()}")
    header = [
        "TASKQ_DURABILITY",
        "acknowledged",
        "before the kill",
        "lost",
        "completed",
        "promotion s",
        "intake resumed s",
        "workers resumed s",
    ]
    how = "SIGSTOP until promoted, then SIGCONT" if args.stall else "kill -9"
    print(table(f"Sentinel failover under load (1 primary, 1 replica, 3 sentinels; {how})", header, rows))
    print(f"took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
