"""The taskq command line: help for everything, bounds on every number, organizations by id or name,
unknown organizations an error everywhere, and the running stack's Redis found from any directory."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskq.cli import build_parser, main
from taskq.ops import OpsError
from taskq.ops.stack import resolve_target
from taskq.settings import Settings
from taskq.store import Store
from tests.support.clients import Client
from tests.support.env import REAL_REDIS_URL
from tests.support.redis_server import free_port

pytestmark = pytest.mark.redis


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from parsers(child)


def test_every_command_has_a_description_and_every_option_a_help_text() -> None:
    missing = []
    for parser in parsers(build_parser()):
        if not parser.description:
            missing.append(f"{parser.prog}: no description")
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction) and not action.help:
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}: no help")
    assert missing == []


def test_the_worker_simulator_and_operator_commands_are_always_there() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"worker", "simulator", "up", "submit"} <= set(commands)


def test_a_command_module_that_fails_to_import_is_a_loud_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import taskq.worker

    monkeypatch.delattr(taskq.worker, "commands", raising=False)
    monkeypatch.setitem(sys.modules, "taskq.worker.commands", None)  # import fails: ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=r"taskq\.worker\.commands"):
        build_parser()


@pytest.fixture
def cli(real_redis: Client, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `taskq ARGS` in this process against the test Redis; returns (exit code, JSON out, stderr)."""
    monkeypatch.setenv("TASKQ_REDIS_URL", REAL_REDIS_URL)

    def run(*args: str) -> tuple[int, Any, str]:
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse refusing an argument
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, json.loads(out) if out.strip() else None, err

    return run


def snapshot(client: Client) -> dict[str, Any]:
    return {str(key): client.dump(key) for key in sorted(client.keys("*"))}


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["org", "create", "neg", "--credits", "-50"], "-50 is out of range"),
        (["org", "create", "huge", "--credits", "1" * 25], "is not an integer from 0 to"),
        (["org", "create", "zero", "--credits", "10", "--concurrency", "0"], "0 is out of range"),
        (["org", "create", "q", "--credits", "10", "--queue-limit", "-5"], "-5 is out of range"),
        (["org", "create", "digits", "--credits", "\u0663"], "is not an integer"),
        (["credits", "add", "ORG", "-1000"], "-1,000 is out of range"),
        (["credits", "add", "ORG", "0"], "0 is out of range"),
        (["credits", "add", "ORG", "9" * 25], "is not an integer from 1 to"),
        (["org", "set", "ORG", "--concurrency", "-1"], "-1 is out of range"),
        (["org", "set", "ORG", "--queue-limit", "-5"], "-5 is out of range"),
    ],
)
def test_negative_or_absurd_numbers_are_refused_and_change_nothing(
    cli: Any, real_redis: Client, args: list[str], complaint: str
) -> None:
    org, _ = Store(real_redis).create_org("acme", credits=100, concurrency=5, queue_limit=50)
    before = snapshot(real_redis)
    code, out, err = cli(*[org if a == "ORG" else a for a in args])
    assert code == 2 and out is None
    assert complaint in err and "Traceback" not in err, err
    assert snapshot(real_redis) == before


def test_org_set_without_a_change_says_what_it_takes(cli: Any, real_redis: Client) -> None:
    org, _ = Store(real_redis).create_org("acme", credits=1, concurrency=1, queue_limit=1)
    code, out, err = cli("org", "set", org)
    assert code == 1 and out is None and "Traceback" not in err
    assert json.loads(err)["error"]["message"].startswith("nothing to change: pass --concurrency")


def test_organizations_are_named_by_id_or_name_in_every_command(cli: Any, real_redis: Client) -> None:
    code, created, _ = cli("org", "create", "acme", "--credits", "100")
    assert code == 0
    org = created["orgId"]
    for ref in (org, "acme"):
        code, shown, _ = cli("org", "show", ref)
        assert code == 0 and shown["orgId"] == org and shown["name"] == "acme"
    assert cli("credits", "add", "acme", "50")[1] == {"orgId": org, "credits": 150}
    assert cli("org", "set", "acme", "--concurrency", "7")[1] == {"orgId": org, "concurrency": 7}
    assert cli("org", "webhook-secret", "acme")[1]["orgId"] == org
    assert cli("org", "rotate-webhook-secret", "acme")[1]["orgId"] == org
    assert cli("key", "create", "acme")[1]["orgId"] == org
    assert Store(real_redis).org_fields(org)["concurrency"] == "7"


def test_a_name_two_organizations_share_is_refused_with_their_ids(cli: Any, real_redis: Client) -> None:
    a, _ = Store(real_redis).create_org("twin", credits=1, concurrency=1, queue_limit=1)
    b, _ = Store(real_redis).create_org("twin", credits=1, concurrency=1, queue_limit=1)
    code, out, err = cli("org", "show", "twin")
    assert code == 1 and out is None
    assert a in err and b in err and "2 organizations are named 'twin'" in err


@pytest.mark.parametrize(
    "args",
    [
        ["org", "show", "nobody"],
        ["org", "set", "nobody", "--concurrency", "3"],
        ["org", "webhook-secret", "nobody"],
        ["org", "rotate-webhook-secret", "nobody"],
        ["key", "create", "nobody"],
        ["credits", "add", "nobody", "10"],
    ],
)
def test_an_unknown_organization_is_an_error_with_exit_1(
    cli: Any, real_redis: Client, args: list[str]
) -> None:
    code, out, err = cli(*args)
    assert code == 1 and out is None
    assert json.loads(err)["error"] == {
        "code": "RESOURCE_NOT_FOUND",
        "message": "organization 'nobody' not found: no organization has that id or name",
    }
    assert real_redis.keys("*") == []  # nothing created on the way


# The running stack's card, found from anywhere in the project ----------------------------------------
@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_redis: Client) -> Path:
    """A project directory whose .taskq/stack.json names a running stack (this process) on the test Redis;
    no TASKQ_REDIS_URL, and no local Redis for taskq to fall back on."""
    for name in ("TASKQ_REDIS_URL", "REDIS_URL", "TASKQ_DATA_DIR", "TASKQ_STACK_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TASKQ_LOCAL_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    monkeypatch.setenv("TASKQ_EMBEDDED_REDIS_PORT", str(free_port()))  # nor there
    card = {"url": "http://127.0.0.1:8123", "apiKey": "sk_live_" + "a" * 32, "redisUrl": REAL_REDIS_URL,
            "pid": os.getpid()}  # fmt: skip
    (tmp_path / ".taskq").mkdir()
    (tmp_path / ".taskq" / "stack.json").write_text(json.dumps(card))
    (tmp_path / "src" / "deep").mkdir(parents=True)
    return tmp_path


def test_org_commands_use_the_running_stacks_redis_from_a_subdirectory(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    real_redis: Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(project / "src" / "deep")
    assert main(["org", "create", "deep", "--credits", "5"]) == 0
    org = json.loads(capsys.readouterr().out)["orgId"]
    assert Store(real_redis).org_fields(org)["name"] == "deep"


def test_stack_names_the_stack_file_from_any_directory(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
    real_redis: Client, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert main(["org", "create", "far", "--credits", "5"]) == 1  # no stack here, no Redis to guess
    assert "no running taskq stack" in capsys.readouterr().err
    assert real_redis.keys("*") == []
    card = str(project / ".taskq" / "stack.json")
    assert main(["org", "create", "far", "--credits", "5", "--stack", card]) == 0
    assert json.loads(capsys.readouterr().out)["orgId"] in Store(real_redis).list_orgs()


def test_a_stack_file_of_a_stopped_stack_is_not_used(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    real_redis: Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    card = project / ".taskq" / "stack.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), "pid": 2**22 + 1}))  # above pid_max
    monkeypatch.chdir(project)
    assert main(["org", "show", "x", "--stack", str(card)]) == 1
    assert "no running taskq stack at" in capsys.readouterr().err


def test_submit_finds_the_stack_from_a_subdirectory(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project / "src" / "deep")
    target = resolve_target(Settings(), None, None)
    assert (target.url, target.api_key) == ("http://127.0.0.1:8123", "sk_live_" + "a" * 32)
    monkeypatch.chdir(project.parent)
    with pytest.raises(OpsError, match="no running stack found at"):
        resolve_target(Settings(), None, None)
    named = Settings(stack_file=str(project / ".taskq" / "stack.json"))
    assert resolve_target(named, None, None).url == "http://127.0.0.1:8123"
