"""The local stack's organization (created once, reused) and where the tools find URL and key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskq import keys
from taskq.ops import OpsError
from taskq.ops.stack import Target, read_stack, remove_stack, resolve_target, write_stack
from taskq.ops.stackorg import CREDITS, ensure_stack_org
from taskq.store import Store
from tests.support.clients import fake_client
from tests.support.settings import make_settings


@pytest.fixture
def store() -> Any:
    client = fake_client()
    yield Store(client)
    client.close()


def test_the_stack_org_is_created_once_and_reused(store: Store) -> None:
    first = ensure_stack_org(store, concurrency=100, queue_limit=1000)
    second = ensure_stack_org(store, concurrency=400, queue_limit=1000)

    assert first.created and not second.created
    assert (second.org_id, second.api_key) == (first.org_id, first.api_key)
    assert store.list_orgs() == [first.org_id]
    assert store.org_fields(first.org_id)["concurrency"] == "400"
    assert second.webhook_secrets == store.webhook_secrets(first.org_id)
    org, _ = store.authenticate(f"Bearer {first.api_key}")
    assert org.id == first.org_id
    assert store.credits(org)["remaining"] == CREDITS


def test_a_revoked_stack_key_makes_a_new_org(store: Store) -> None:
    first = ensure_stack_org(store, concurrency=100, queue_limit=1000)
    store.revoke_key(first.api_key)

    second = ensure_stack_org(store, concurrency=100, queue_limit=1000)

    assert second.created and second.org_id != first.org_id
    stack_org = store.client.get(keys.STACK_ORG)
    assert stack_org is not None and json.loads(stack_org)["orgId"] == second.org_id


def test_credits_are_topped_up_when_low(store: Store) -> None:
    first = ensure_stack_org(store, concurrency=100, queue_limit=1000)
    store.add_credits(first.org_id, -CREDITS + 5)

    ensure_stack_org(store, concurrency=100, queue_limit=1000)

    assert store.credits(store.org(first.org_id))["remaining"] == CREDITS + 5


def where(target: Target) -> tuple[str, str]:
    return target.url, target.api_key


def test_flags_beat_the_environment_which_beats_the_stack_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(data_dir=str(tmp_path))
    write_stack(settings, {"url": "http://card:1/", "apiKey": "sk_card", "pid": os.getpid()})
    monkeypatch.delenv("TASKQ_URL", raising=False)
    monkeypatch.delenv("TASKQ_API_KEY", raising=False)
    assert where(resolve_target(settings, None, None)) == ("http://card:1", "sk_card")
    monkeypatch.setenv("TASKQ_URL", "http://env:2")
    monkeypatch.setenv("TASKQ_API_KEY", "sk_env")
    assert where(resolve_target(settings, None, None)) == ("http://env:2", "sk_env")
    assert where(resolve_target(settings, "http://flag:3", "sk_flag")) == ("http://flag:3", "sk_flag")


def test_without_a_stack_the_error_says_how_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKQ_URL", raising=False)
    monkeypatch.delenv("TASKQ_API_KEY", raising=False)
    with pytest.raises(OpsError, match="taskq up"):
        resolve_target(make_settings(data_dir=str(tmp_path)), None, None)


def test_a_card_left_by_a_killed_stack_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKQ_URL", raising=False)
    monkeypatch.delenv("TASKQ_API_KEY", raising=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_stack(
        make_settings(data_dir=str(tmp_path)), {"url": "http://card:1/", "apiKey": "sk_card", "pid": dead.pid}
    )
    with pytest.raises(OpsError, match="taskq up"):
        resolve_target(make_settings(data_dir=str(tmp_path)), None, None)


def test_the_stack_card_is_private_and_removed_only_by_its_writer(tmp_path: Path) -> None:
    settings = make_settings(data_dir=str(tmp_path))
    path = write_stack(settings, {"url": "u", "apiKey": "k", "pid": 42})
    assert path.stat().st_mode & 0o777 == 0o600
    remove_stack(settings, 41)
    assert read_stack(settings) == {"url": "u", "apiKey": "k", "pid": 42}
    remove_stack(settings, 42)
    assert read_stack(settings) is None
