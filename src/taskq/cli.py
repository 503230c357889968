"""The taskq command: serve the intake, run workers, manage organizations, keys and credits."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from taskq.errors import AmbiguousOrg, NoRedis, TaskqError, ValidationFailed
from taskq.logs import configure as configure_logging
from taskq.settings import Settings, load_settings

if TYPE_CHECKING:
    from taskq.store import Store

Handler = Callable[[argparse.Namespace, Settings], int]


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


#: Bounds of the numbers an operator types (a 25-digit credit amount would overflow Redis's integers).
MAX_CREDITS = 10**15
MAX_CONCURRENCY = 1_000_000
MAX_QUEUE_LIMIT = 10**12


def _store(settings: Settings) -> Store:
    """The store of the configured Redis, the running stack's, or a local one taskq may use (never
    starting a server for a one-off command)."""
    from taskq.connection import connect, foreign_data
    from taskq.embedded import EmbeddedServer, answers
    from taskq.store import Store

    url = settings.redis_url
    if url is None:
        embedded = EmbeddedServer(settings.embedded_redis_port, os.path.join(settings.data_dir, "redis"))
        local = settings.local_redis_url
        if answers(local) and foreign_data(local) is None:
            url = local
        elif answers(embedded.url):
            url = embedded.url
        else:
            raise NoRedis(
                "no running taskq stack and no Redis to use: start one with `taskq up`, name its stack "
                "file with --stack, or set TASKQ_REDIS_URL"
            )
    return Store(connect(url, cluster=settings.redis_cluster), settings.shards)


def _org(store: Store, ref: str) -> str:
    """The id of the organization named by ref: its id, or its name if exactly one has that name."""
    from taskq.errors import NotFound

    if store.org_exists(ref):
        return ref
    named = [
        org for org in store.list_orgs() if store.client.hget(store.org(org).shard.org(org), "name") == ref
    ]
    if not named:
        raise NotFound(f"organization {ref!r} not found: no organization has that id or name", {"org": ref})
    if len(named) > 1:
        raise AmbiguousOrg(f"{len(named)} organizations are named {ref!r}: pass one of their ids {named}")
    return str(named[0])


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer written in ASCII digits (an optional minus), from low to high."""

    def parse(text: str) -> int:
        digits = text.removeprefix("-")
        if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(high)) + 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer from {low:,} to {high:,}")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{value:,} is out of range: an integer from {low:,} to {high:,}"
            )
        return value

    parse.__name__ = "integer"
    return parse


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
        if args.threads:
            os.environ["TASKQ_INTAKE_THREADS"] = str(args.threads)  # read by each process's settings
        serve(host=args.host, port=args.port, workers=args.workers)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def cmd_simulator(args: argparse.Namespace, settings: Settings) -> int:
    from taskq.simulator.app import serve

    serve(
        args.host,
        args.port,
        args.latency,
        args.error_rate,
        rate_limit=args.rate_limit,
        quota=args.quota,
        revoked=tuple(args.revoke_key),
        limit_headers=not args.no_limit_headers,
    )
    return 0


def cmd_org_create(args: argparse.Namespace, settings: Settings) -> int:
    org_id, api_key = _store(settings).create_org(
        args.name,
        credits=args.credits,
        concurrency=args.concurrency if args.concurrency is not None else settings.default_concurrency,
        queue_limit=args.queue_limit if args.queue_limit is not None else settings.default_queue_limit,
    )
    _print({"orgId": org_id, "apiKey": api_key})
    return 0


def cmd_org_show(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    org_id = _org(store, args.org)
    fields = store.org_fields(org_id)
    org = store.org(org_id)
    _print(
        {
            "orgId": org_id,
            "name": fields.get("name"),
            "credits": store.credits(org),
            "status": store.status(org),
            "queueLimit": int(fields.get("queue_limit", 0)),
        }
    )
    return 0


def cmd_org_set(args: argparse.Namespace, settings: Settings) -> int:
    limits = (("concurrency", args.concurrency), ("queue_limit", args.queue_limit))
    changes = {k: v for k, v in limits if v is not None}
    if args.notify_canceled is not None:
        changes["notify_canceled"] = 1 if args.notify_canceled == "yes" else 0
    if not changes:
        raise ValidationFailed("nothing to change: pass --concurrency, --queue-limit or --notify-canceled")
    store = _store(settings)
    org_id = _org(store, args.org)
    store.update_org(org_id, **changes)
    _print({"orgId": org_id, **changes})
    return 0


def cmd_rotate_secret(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    org_id = _org(store, args.org)
    secret = store.rotate_webhook_secret(org_id, settings.webhook_secret_overlap_seconds)
    _print(
        {
            "orgId": org_id,
            "webhookSecret": secret,
            "overlapSeconds": settings.webhook_secret_overlap_seconds,
        }
    )
    return 0


def cmd_webhook_secret(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    org_id = _org(store, args.org)
    _print({"orgId": org_id, "webhookSecrets": store.webhook_secrets(org_id)})
    return 0


def cmd_key_create(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    org_id = _org(store, args.org)
    _print({"orgId": org_id, "apiKey": store.create_key(org_id)})
    return 0


def cmd_key_revoke(args: argparse.Namespace, settings: Settings) -> int:
    revoked = _store(settings).revoke_key(args.api_key)
    _print({"revoked": revoked})
    return 0 if revoked else 1


def cmd_credits_add(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    org_id = _org(store, args.org)
    balance = store.add_credits(org_id, args.amount)
    _print({"orgId": org_id, "credits": balance})
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


def _schedule_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schedule = sub.add_parser("schedule", help="recurring schedules").add_subparsers(
        dest="schedule_command", required=True
    )
    listing = schedule.add_parser("list", help="every organization's schedules, soonest next run first")
    listing.add_argument("--limit", type=int, default=100, help="most schedules to list (default 100)")
    listing.set_defaults(handler=cmd_schedule_list)
    show = schedule.add_parser("show", help="a schedule with its tasks and recent runs")
    show.add_argument("schedule_id", help="schedule id")
    show.set_defaults(handler=cmd_schedule_show)
    pause = schedule.add_parser("pause", help="stop a schedule firing")
    pause.add_argument("schedule_id", help="schedule id")
    pause.set_defaults(handler=cmd_schedule_pause, paused=True)
    resume = schedule.add_parser("resume", help="fire again, from the next occurrence after now")
    resume.add_argument("schedule_id", help="schedule id")
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


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, description: str = ""
) -> argparse.ArgumentParser:
    """A subcommand whose --help starts with what it does (summary, then the longer description)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {description}".strip()
    )
    return parser


ORG_HELP = "organization id (org_...) or name"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskq",
        description="Redis-backed task queue for AI-provider tasks. Commands that need Redis use "
        "TASKQ_REDIS_URL, else the running `taskq up` stack (its .taskq/stack.json, here or in a parent "
        "directory, or --stack FILE).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _command(sub, "serve", "run the intake (HTTP API) under gunicorn")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="intake processes, each an event loop with its own threads for Flask (default 1; one per core "
        "on a machine of its own)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        help="threads per process for the requests served by Flask (default TASKQ_INTAKE_THREADS, 16)",
    )
    serve.set_defaults(handler=cmd_serve)

    sim = _command(sub, "simulator", "run the provider simulator (every upstream format, one address)")
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
    sim.add_argument("--latency", default="0", help="seconds, or uniform:A,B or exp:MEAN")
    sim.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered with an error")
    sim.add_argument(
        "--rate-limit",
        type=float,
        default=0.0,
        help="requests/s each flavor and key allows; above it the flavor's own 429",
    )
    sim.add_argument("--quota", type=int, default=0, help="calls each key serves, then quota errors")
    sim.add_argument("--revoke-key", action="append", default=[], help="a key answered with 401 (repeatable)")
    sim.add_argument("--no-limit-headers", action="store_true",
                     help="under --rate-limit, x-ratelimit-* headers on 429s only")  # fmt: skip
    sim.set_defaults(handler=cmd_simulator)

    org = _command(sub, "org", "manage organizations").add_subparsers(
        dest="org_command", required=True, metavar="ORG_COMMAND"
    )
    create = _command(org, "create", "create an organization and its first API key", "Prints both as JSON.")
    create.add_argument("name", help="a name for people; commands accept it where they take an organization")
    create.add_argument(
        "--credits",
        type=_bounded(0, MAX_CREDITS),
        required=True,
        help=f"starting balance (0 to {MAX_CREDITS:,})",
    )
    create.add_argument(
        "--concurrency",
        type=_bounded(1, MAX_CONCURRENCY),
        help="most tasks running at once (default TASKQ_DEFAULT_CONCURRENCY)",
    )
    create.add_argument(
        "--queue-limit",
        type=_bounded(1, MAX_QUEUE_LIMIT),
        help="most tasks queued at once (default TASKQ_DEFAULT_QUEUE_LIMIT)",
    )
    create.set_defaults(handler=cmd_org_create)
    show = _command(org, "show", "an organization's credits, queue and limits")
    show.add_argument("org", help=ORG_HELP)
    show.set_defaults(handler=cmd_org_show)
    update = _command(org, "set", "change an organization's limits")
    update.add_argument("org", help=ORG_HELP)
    update.add_argument("--concurrency", type=_bounded(1, MAX_CONCURRENCY), help="most tasks running at once")
    update.add_argument("--queue-limit", type=_bounded(1, MAX_QUEUE_LIMIT), help="most tasks queued at once")
    update.add_argument("--notify-canceled", choices=["yes", "no"], help="send webhooks for CANCELED tasks")
    update.set_defaults(handler=cmd_org_set)
    rotate = _command(
        org,
        "rotate-webhook-secret",
        "new webhook secret; the old one keeps signing for TASKQ_WEBHOOK_SECRET_OVERLAP_SECONDS",
    )
    rotate.add_argument("org", help=ORG_HELP)
    rotate.set_defaults(handler=cmd_rotate_secret)
    secret = _command(org, "webhook-secret", "print the active webhook secrets (newest first)")
    secret.add_argument("org", help=ORG_HELP)
    secret.set_defaults(handler=cmd_webhook_secret)

    key = _command(sub, "key", "manage API keys").add_subparsers(
        dest="key_command", required=True, metavar="KEY_COMMAND"
    )
    key_create = _command(key, "create", "create another API key for an organization")
    key_create.add_argument("org", help=ORG_HELP)
    key_create.set_defaults(handler=cmd_key_create)
    key_revoke = _command(key, "revoke", "revoke an API key", "Exit code 1 when the key was not known.")
    key_revoke.add_argument("api_key", help="the key (sk_live_...)")
    key_revoke.set_defaults(handler=cmd_key_revoke)

    credits = _command(sub, "credits", "manage credits").add_subparsers(
        dest="credits_command", required=True, metavar="CREDITS_COMMAND"
    )
    add = _command(credits, "add", "add credits to an organization")
    add.add_argument("org", help=ORG_HELP)
    add.add_argument("amount", type=_bounded(1, MAX_CREDITS), help=f"credits to add (1 to {MAX_CREDITS:,})")
    add.set_defaults(handler=cmd_credits_add)

    _schedule_commands(sub)
    lane = sub.add_parser("lane", help="provider flow control: rates, pauses, quotas, key pools")
    lanes = lane.add_subparsers(dest="lane_command", required=True)
    lane_status = lanes.add_parser("status", help="each provider's keys: state, rates, calls/s, 429s, pauses")
    lane_status.add_argument("provider", nargs="?", help="one task type (default: all)")
    lane_status.set_defaults(handler=cmd_lane_status)
    lane_pause = lanes.add_parser("pause", help="stop claiming a provider's tasks (they stay queued)")
    lane_pause.add_argument("provider", help="task type, e.g. CHATGPT")
    lane_pause.add_argument("--reason", default="paused by the operator", help="why, shown in `lane status`")
    lane_pause.add_argument("--seconds", type=float, help="resume by itself after this long (default: never)")
    lane_pause.set_defaults(handler=cmd_lane_pause)
    lane_resume = lanes.add_parser("resume", help="run a provider again: clear pauses, quota, refused keys")
    lane_resume.add_argument("provider", help="task type, e.g. CHATGPT")
    lane_resume.set_defaults(handler=cmd_lane_resume)

    extend(sub)
    _describe(parser)
    _add_stack_flag(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """A command registered with help= only gets that text as its --help description too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                if not child.description and summaries.get(name):
                    text = str(summaries[name])
                    child.description = f"{text[0].upper()}{text[1:]}."
                _describe(child)


def _add_stack_flag(parser: argparse.ArgumentParser) -> None:
    """Give every command that uses a stack (the leaves of the tree, wherever they were registered; not
    `up`, which starts one) --stack FILE."""
    children = [
        child
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for child in action.choices.values()
    ]
    for child in children:
        _add_stack_flag(child)
    if not children and parser.prog not in ("taskq", "taskq up", "taskq simulator"):
        parser.add_argument(
            "--stack",
            metavar="FILE",
            help="stack file of the running `taskq up` to use (default: .taskq/stack.json here or in a "
            "parent directory)",
        )


def extend(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands of the worker runtime, simulator and operator tools (registered in their modules).
    A module that fails to import is an error here, never a command quietly missing."""
    from taskq.ops import commands as ops_commands
    from taskq.worker import commands as worker_commands

    worker_commands.register(sub)
    ops_commands.register(sub)


def with_stack(args: argparse.Namespace, settings: Settings) -> Settings:
    """Settings for this command: the stack file it names, and with no TASKQ_REDIS_URL the Redis of
    the running `taskq up` stack (read before any guess). `taskq up` starts a stack of its own."""
    from taskq.ops.stack import running_stack

    if getattr(args, "stack", None):
        settings = settings.model_copy(update={"stack_file": args.stack})
    if settings.redis_url is None and args.command not in ("up", "simulator"):
        path, stack = running_stack(settings)
        if stack is not None and stack.get("redisUrl"):
            settings = settings.model_copy(update={"redis_url": stack["redisUrl"]})
        elif settings.stack_file:
            raise NoRedis(f"no running taskq stack at {path}")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    try:
        code: int = args.handler(args, with_stack(args, settings))
        return code
    except TaskqError as exc:
        print(json.dumps({"error": {"code": exc.code.value, "message": exc.message}}), file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
