"""The `taskq up`, `taskq submit` and `taskq demo` subcommands (registered into the taskq CLI)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from taskq.ops import OpsError
from taskq.settings import Settings


def _guarded(name: str, module: str) -> Callable[[argparse.Namespace, Settings], int]:
    """A CLI handler that imports its module on use and prints OpsError as one line (exit 2)."""

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        try:
            mod = __import__(f"taskq.ops.{module}", fromlist=["run"])
            code: int = mod.run(args, settings)
            return code
        except OpsError as exc:
            print(f"taskq {name}: {exc}", file=sys.stderr)
            return 2

    return handler


def _target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="intake URL (default: TASKQ_URL, else the running `taskq up` stack)")
    parser.add_argument("--api-key", help="API key (default: TASKQ_API_KEY, else the `taskq up` stack's)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser(
        "up",
        help="run the whole local stack: Redis, intake, workers (and a simulator)",
        description="Run the whole local stack in the foreground until Ctrl-C: Redis (TASKQ_REDIS_URL; else "
        "a local Redis on 6379 only if it is empty or already holds taskq's data; else an embedded server "
        "with its AOF in .taskq/), the intake, worker processes, webhook delivery and, with --simulate, "
        "the provider simulator. Prints a ready-to-use organization and API key and writes "
        ".taskq/stack.json, which the other commands read.",
    )
    up.add_argument("--simulate", action="store_true", help="point every provider at a local simulator")
    up.add_argument("--port", type=int, default=8000, help="intake port (default 8000)")
    up.add_argument("--workers", type=int, metavar="P", help="worker processes")
    up.add_argument("--concurrency", type=int, metavar="K", help="calls in flight per worker process")
    up.add_argument("--sim-latency", default="uniform:0.2,1.5", metavar="S", help="simulator latency")
    up.add_argument("--sim-error-rate", type=float, default=0.0, metavar="R", help="simulator error rate")
    up.add_argument(
        "--embedded-redis", action="store_true", help="always use the embedded Redis (ignore localhost:6379)"
    )
    up.set_defaults(handler=_guarded("up", "up"))

    submit = sub.add_parser(
        "submit",
        help="submit a JSONL or JSON-array file of tasks in batches",
        description="Submit a JSONL or JSON-array file of tasks in batches. Writes the admitted task ids "
        "to FILE.ids, one line per input task in input order, a blank line where a task was rejected. "
        "Exit code 0 when every task was admitted (and, with --wait, completed); 1 when some were "
        "rejected (or, with --wait, failed or still pending at --timeout); 2 when nothing could be "
        "submitted (no stack, unreadable file, bad flags).",
    )
    submit.add_argument("file", help="tasks: one JSON object per line, or one JSON array")
    _target_flags(submit)
    submit.add_argument("--ids-out", help="admitted task ids, one per input line (default FILE.ids)")
    submit.add_argument("--wait", action="store_true", help="wait until every task finished")
    submit.add_argument("--results-out", help="results as JSON lines (default FILE.results.jsonl)")
    submit.add_argument("--batch-size", type=int, default=500, help="tasks per request (1-500)")
    submit.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    submit.set_defaults(handler=_guarded("submit", "submit"))

    demo = sub.add_parser(
        "demo",
        help="submit a realistic batch to a running stack and verify its webhooks",
        description="Submit a batch of every task type (and a few invalid tasks) to a running stack, "
        "receive its webhooks on a local receiver, and print latency, failures and verified webhooks.",
    )
    _target_flags(demo)
    demo.add_argument("--org-id", help="organization of the key, to read its webhook secrets")
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait (default 180)")
    demo.set_defaults(handler=_guarded("demo", "demo"))
