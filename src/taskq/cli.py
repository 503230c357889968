"""The taskq command: serve the intake, run workers, manage organizations, keys and credits."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from taskq.errors import TaskqError
from taskq.logs import configure as configure_logging
from taskq.settings import Settings, load_settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _store(settings: Settings) -> Any:
    from taskq.connection import connect, resolve_url
    from taskq.store import Store

    url, _ = resolve_url(settings)
    return Store(connect(url, cluster=settings.redis_cluster), settings.shards)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from taskq.connection import connect, resolve_url
    from taskq.durability import DurabilityUnsupported, check_server
    from taskq.server import serve

    url, embedded = resolve_url(settings)
    os.environ["TASKQ_REDIS_URL"] = url
    try:
        for warning in check_server(connect(url, cluster=settings.redis_cluster), settings):
            print(f"taskq serve: {warning}", file=sys.stderr)
    except DurabilityUnsupported as exc:  # before gunicorn: its workers would fail to boot one by one
        print(f"taskq serve: {exc}", file=sys.stderr)
        if embedded is not None:
            embedded.stop()
        return 2
    try:
        threads = args.threads or settings.intake_threads
        os.environ["TASKQ_INTAKE_THREADS"] = str(threads)  # each process sizes its Redis pool from it
        serve(host=args.host, port=args.port, workers=args.workers, threads=threads)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def cmd_simulator(args: argparse.Namespace, settings: Settings) -> int:
    from taskq.providers.simulator import serve

    serve(args.host, args.port, args.latency, args.error_rate, rate_limit=args.rate_limit, quota=args.quota,
          revoked=tuple(args.revoke_key))  # fmt: skip
    return 0


def cmd_org_create(args: argparse.Namespace, settings: Settings) -> int:
    org_id, api_key = _store(settings).create_org(
        args.name,
        credits=args.credits,
        concurrency=args.concurrency or settings.default_concurrency,
        queue_limit=args.queue_limit or settings.default_queue_limit,
    )
    _print({"orgId": org_id, "apiKey": api_key})
    return 0


def cmd_org_show(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    fields = store.org_fields(args.org_id)
    org = store.org(args.org_id)
    _print(
        {
            "orgId": args.org_id,
            "name": fields.get("name"),
            "credits": store.credits(org),
            "status": store.status(org),
            "queueLimit": int(fields.get("queue_limit", 0)),
        }
    )
    return 0


def cmd_org_set(args: argparse.Namespace, settings: Settings) -> int:
    changes = {k: v for k, v in (("concurrency", args.concurrency), ("queue_limit", args.queue_limit)) if v}
    if args.notify_canceled is not None:
        changes["notify_canceled"] = 1 if args.notify_canceled == "yes" else 0
    _store(settings).update_org(args.org_id, **changes)
    _print({"orgId": args.org_id, **changes})
    return 0


def cmd_rotate_secret(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    secret = store.rotate_webhook_secret(args.org_id, settings.webhook_secret_overlap_seconds)
    _print(
        {
            "orgId": args.org_id,
            "webhookSecret": secret,
            "overlapSeconds": settings.webhook_secret_overlap_seconds,
        }
    )
    return 0


def cmd_webhook_secret(args: argparse.Namespace, settings: Settings) -> int:
    _print({"orgId": args.org_id, "webhookSecrets": _store(settings).webhook_secrets(args.org_id)})
    return 0


def cmd_key_create(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    store.org_fields(args.org_id)
    _print({"orgId": args.org_id, "apiKey": store.create_key(args.org_id)})
    return 0


def cmd_key_revoke(args: argparse.Namespace, settings: Settings) -> int:
    revoked = _store(settings).revoke_key(args.api_key)
    _print({"revoked": revoked})
    return 0 if revoked else 1


def cmd_credits_add(args: argparse.Namespace, settings: Settings) -> int:
    balance = _store(settings).add_credits(args.org_id, args.amount)
    _print({"orgId": args.org_id, "credits": balance})
    return 0


def cmd_schedule_list(args: argparse.Namespace, settings: Settings) -> int:
    from taskq import schedules

    _print(schedules.overview(_store(settings), limit=args.limit))
    return 0


def cmd_schedule_show(args: argparse.Namespace, settings: Settings) -> int:
    from taskq import schedules

    store = _store(settings)
    _print(schedules.get(store, schedules.find(store, args.schedule_id), args.schedule_id))
    return 0


def cmd_schedule_pause(args: argparse.Namespace, settings: Settings) -> int:
    from taskq import schedules

    store = _store(settings)
    org = schedules.find(store, args.schedule_id)
    _print(schedules.set_paused(store, settings, org, args.schedule_id, args.paused))
    return 0


def _schedule_commands(sub: Any) -> None:
    schedule = sub.add_parser("schedule", help="recurring schedules").add_subparsers(
        dest="schedule_command", required=True
    )
    listing = schedule.add_parser("list", help="every organization's schedules, soonest next run first")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=cmd_schedule_list)
    show = schedule.add_parser("show", help="a schedule with its tasks and recent runs")
    show.add_argument("schedule_id")
    show.set_defaults(handler=cmd_schedule_show)
    pause = schedule.add_parser("pause", help="stop a schedule firing")
    pause.add_argument("schedule_id")
    pause.set_defaults(handler=cmd_schedule_pause, paused=True)
    resume = schedule.add_parser("resume", help="fire again, from the next occurrence after now")
    resume.add_argument("schedule_id")
    resume.set_defaults(handler=cmd_schedule_pause, paused=False)


def cmd_lane_status(args: argparse.Namespace, settings: Settings) -> int:
    from taskq import flow

    lanes = flow.status(_store(settings))
    _print([lane for lane in lanes if not args.provider or lane["provider"] == args.provider.upper()])
    return 0


def cmd_lane_pause(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from taskq import flow

    until = time.time() + args.seconds if args.seconds else None
    _print(flow.pause(_store(settings), args.provider, args.reason, until))
    return 0


def cmd_lane_resume(args: argparse.Namespace, settings: Settings) -> int:
    from taskq import flow

    _print(flow.resume(_store(settings), args.provider))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskq", description="Redis-backed task queue for AI-provider tasks"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the intake under gunicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=2)
    serve.add_argument("--threads", type=int, help="threads per process (default TASKQ_INTAKE_THREADS, 512)")
    serve.set_defaults(handler=cmd_serve)

    sim = sub.add_parser("simulator", help="run the provider simulator (every upstream format, one address)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--latency", default="0", help="seconds, or uniform:A,B or exp:MEAN")
    sim.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered with an error")
    sim.add_argument("--rate-limit", type=float, default=0.0,
                     help="requests/s each flavor and key allows; above it the flavor's own 429")  # fmt: skip
    sim.add_argument("--quota", type=int, default=0, help="calls each key serves, then quota errors")
    sim.add_argument("--revoke-key", action="append", default=[], help="a key answered with 401 (repeatable)")
    sim.set_defaults(handler=cmd_simulator)

    org = sub.add_parser("org", help="organizations").add_subparsers(dest="org_command", required=True)
    create = org.add_parser("create", help="create an organization and its first API key")
    create.add_argument("name")
    create.add_argument("--credits", type=int, required=True)
    create.add_argument("--concurrency", type=int)
    create.add_argument("--queue-limit", type=int)
    create.set_defaults(handler=cmd_org_create)
    show = org.add_parser("show", help="an organization's credits and queue")
    show.add_argument("org_id")
    show.set_defaults(handler=cmd_org_show)
    update = org.add_parser("set", help="change an organization's limits")
    update.add_argument("org_id")
    update.add_argument("--concurrency", type=int)
    update.add_argument("--queue-limit", type=int)
    update.add_argument("--notify-canceled", choices=["yes", "no"], help="send webhooks for CANCELED tasks")
    update.set_defaults(handler=cmd_org_set)
    rotate = org.add_parser("rotate-webhook-secret", help="new webhook secret; the old one overlaps")
    rotate.add_argument("org_id")
    rotate.set_defaults(handler=cmd_rotate_secret)
    secret = org.add_parser("webhook-secret", help="print the active webhook secrets")
    secret.add_argument("org_id")
    secret.set_defaults(handler=cmd_webhook_secret)

    key = sub.add_parser("key", help="API keys").add_subparsers(dest="key_command", required=True)
    key_create = key.add_parser("create", help="create another API key")
    key_create.add_argument("org_id")
    key_create.set_defaults(handler=cmd_key_create)
    key_revoke = key.add_parser("revoke", help="revoke an API key")
    key_revoke.add_argument("api_key")
    key_revoke.set_defaults(handler=cmd_key_revoke)

    credits = sub.add_parser("credits", help="credits").add_subparsers(dest="credits_command", required=True)
    add = credits.add_parser("add", help="add credits to an organization")
    add.add_argument("org_id")
    add.add_argument("amount", type=int)
    add.set_defaults(handler=cmd_credits_add)

    _schedule_commands(sub)
    lane = sub.add_parser("lane", help="provider flow control: rates, pauses, quotas, key pools")
    lanes = lane.add_subparsers(dest="lane_command", required=True)
    lane_status = lanes.add_parser("status", help="each provider's keys: state, rates, calls/s, 429s, pauses")
    lane_status.add_argument("provider", nargs="?", help="one task type (default: all)")
    lane_status.set_defaults(handler=cmd_lane_status)
    lane_pause = lanes.add_parser("pause", help="stop claiming a provider's tasks (they stay queued)")
    lane_pause.add_argument("provider", help="task type, e.g. CHATGPT")
    lane_pause.add_argument("--reason", default="paused by the operator")
    lane_pause.add_argument("--seconds", type=float, help="resume by itself after this long (default: never)")
    lane_pause.set_defaults(handler=cmd_lane_pause)
    lane_resume = lanes.add_parser("resume", help="run a provider again: clear pauses, quota, refused keys")
    lane_resume.add_argument("provider", help="task type, e.g. CHATGPT")
    lane_resume.set_defaults(handler=cmd_lane_resume)

    extend(sub)
    return parser


def extend(sub: Any) -> None:
    """Commands of the worker runtime, simulator and operator tools (registered in their modules)."""
    for module in ("taskq.worker.commands", "taskq.ops.commands"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue
            raise
        mod.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    try:
        code: int = args.handler(args, settings)
        return code
    except TaskqError as exc:
        print(json.dumps({"error": {"code": exc.code.value, "message": exc.message}}), file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
