"""The `taskq worker` command: start P RQ-supervised worker processes, each draining K calls at once."""

from __future__ import annotations

import argparse
import sys

from taskq.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser(
        "worker",
        help="run worker processes (RQ worker pool of asyncio drains)",
        description="Run P RQ-supervised worker processes, each keeping K provider calls in flight, until "
        "SIGTERM (calls in flight get TASKQ_SHUTDOWN_GRACE_SECONDS, then are released).",
    )
    worker.add_argument("--processes", type=int, help="RQ worker processes (TASKQ_WORKER_PROCESSES)")
    worker.add_argument("--concurrency", type=int, help="provider calls in flight per process")
    worker.add_argument("--drain-seconds", type=float, help="how long one drain job runs before RQ recycles")
    worker.set_defaults(handler=cmd_worker)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from taskq.connection import connect, resolve_url
    from taskq.durability import DurabilityUnsupported, check_server
    from taskq.worker.hosting import rq_url, serve

    try:
        rq_url(settings)  # before starting anything: a cluster needs TASKQ_RQ_REDIS_URL
    except ValueError as exc:
        print(f"taskq worker: {exc}", file=sys.stderr)
        return 2
    url, embedded = resolve_url(settings)
    settings = settings.model_copy(update={"redis_url": url})
    try:
        for warning in check_server(connect(url, cluster=settings.redis_cluster), settings):
            print(f"taskq worker: {warning}", file=sys.stderr)
    except DurabilityUnsupported as exc:
        print(f"taskq worker: {exc}", file=sys.stderr)
        if embedded is not None:
            embedded.stop()
        return 2
    processes = args.processes or settings.worker_processes
    concurrency = args.concurrency or settings.worker_concurrency
    rq = rq_url(settings)
    where = f"redis {url}" + ("" if rq == url else f", RQ on {rq}")
    print(f"taskq worker: {processes} process(es) x {concurrency} calls, {where}", file=sys.stderr)
    try:
        return serve(
            settings,
            processes=processes,
            concurrency=concurrency,
            drain_seconds=args.drain_seconds or settings.drain_seconds,
        )
    finally:
        if embedded is not None:
            embedded.stop()
