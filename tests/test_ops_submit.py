"""`taskq submit` against a real intake process: batching, rejections by line, the ids file, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskq.cli import main
from taskq.store import Store
from tests.support.env import PROVIDER_ENV, REAL_REDIS_URL, real_redis_client
from tests.support.redis_server import free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `taskq serve` on a free port, on the test Redis, with every provider configured."""
    real_redis_client().close()  # skips the module when no Redis answers
    port = free_port()
    env = dict(os.environ, TASKQ_REDIS_URL=REAL_REDIS_URL, **PROVIDER_ENV)
    env["TASKQ_DATA_DIR"] = str(tmp_path_factory.mktemp("intake"))
    cmd = [sys.executable, "-m", "taskq", "serve", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "intake exited"
            assert time.monotonic() < deadline, "intake did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def org_key(real_redis: Any, intake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TASKQ_DATA_DIR", str(tmp_path / "no-stack"))
    monkeypatch.delenv("TASKQ_URL", raising=False)
    monkeypatch.delenv("TASKQ_API_KEY", raising=False)
    _, key = Store(real_redis).create_org("ops", credits=1_000_000, concurrency=10, queue_limit=100_000)
    return key


def news(query: str, **extra: Any) -> dict[str, Any]:
    return {"taskType": "GOOGLE_NEWS", "payload": {"query": query, "country": "US"}, **extra}


def submit(path: Path, url: str, key: str, *extra: str) -> int:
    return main(["submit", str(path), "--url", url, "--api-key", key, *extra])


def test_jsonl_rejections_are_reported_by_line_and_ids_follow_the_lines(
    intake: str, org_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        json.dumps(news("solar panels")),
        json.dumps(news("heat pumps", priority=7)),
        '{"taskType": "GOOGLE_NEWS", "payload": {',  # line 3: not JSON
        "",  # line 4: blank, skipped
        json.dumps({"taskType": "CHATGPT", "payload": {"prompt": "hi", "country": "us"}}),  # line 5
        json.dumps(news("wind farms", idempotencyKey="k-1")),
        json.dumps(news("wind farms again", idempotencyKey="k-1")),  # line 7: key repeated
    ]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")

    assert submit(path, intake, org_key) == 1

    out = capsys.readouterr().out
    assert "line 3: INVALID_JSON not valid JSON: Expecting property name" in out
    assert "line 5: VALIDATION_ERROR payload.country" in out
    assert "line 7: RESOURCE_ALREADY_EXISTS" in out
    assert "3 admitted, 3 rejected" in out
    ids = (tmp_path / "tasks.jsonl.ids").read_text().split("\n")[:-1]
    assert len(ids) == len(lines)
    assert [bool(i) for i in ids] == [True, True, False, False, False, True, False]
    for task_id in filter(None, ids):
        task = httpx.get(f"{intake}/v1/async/task/{task_id}", headers={"Authorization": f"Bearer {org_key}"})
        assert task.json()["task"]["status"] == "QUEUED"


def test_json_array_rejections_are_reported_by_index(
    intake: str, org_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = [news("a"), {"taskType": "BING", "payload": {}}, news("c", priority=11), news("d")]
    path = tmp_path / "tasks.json"
    path.write_text("  \n" + json.dumps(tasks, indent=2))
    ids_out = tmp_path / "out.ids"

    assert submit(path, intake, org_key, "--ids-out", str(ids_out)) == 1

    out = capsys.readouterr().out
    assert "index 1: VALIDATION_ERROR taskType" in out
    assert "index 2: VALIDATION_ERROR priority" in out
    ids = ids_out.read_text().splitlines()
    assert [bool(i) for i in ids] == [True, False, False, True]
    assert all(uuid.UUID(i) for i in ids if i)


def test_a_large_file_goes_in_requests_of_at_most_500_tasks(
    intake: str, org_key: str, real_redis: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps(news(f"q{i}")) + "\n" for i in range(1200)))

    assert submit(path, intake, org_key) == 0

    batches = [k for k in real_redis.scan_iter("tq:*:b:*") if not k.endswith(":ids")]
    assert sorted(int(real_redis.hget(b, "total")) for b in batches) == [200, 500, 500]
    ids = (tmp_path / "many.jsonl.ids").read_text().splitlines()
    assert len(ids) == len(set(ids)) == 1200
    assert "1200 admitted, 0 rejected" in capsys.readouterr().out


def test_a_smaller_batch_size_makes_more_requests(
    intake: str, org_key: str, real_redis: Any, tmp_path: Path
) -> None:
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps(news(f"q{i}")) + "\n" for i in range(7)))

    assert submit(path, intake, org_key, "--batch-size", "3") == 0

    batches = [k for k in real_redis.scan_iter("tq:*:b:*") if not k.endswith(":ids")]
    assert sorted(int(real_redis.hget(b, "total")) for b in batches) == [1, 3, 3]


def test_a_wrong_key_stops_with_the_api_error(
    intake: str, org_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(news("x")) + "\n")

    assert submit(path, intake, "sk_live_" + "0" * 32) == 2

    assert "INVALID_OR_EXPIRED_API_KEY" in capsys.readouterr().err


def test_waiting_without_workers_times_out_and_reports_pending_tasks(
    intake: str, org_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wait.jsonl"
    path.write_text(json.dumps(news("a")) + "\n" + json.dumps(news("b", priority=0)) + "\n")

    assert submit(path, intake, org_key, "--wait", "--timeout", "0.5") == 1

    records = [json.loads(line) for line in (tmp_path / "wait.jsonl.results.jsonl").read_text().splitlines()]
    assert [(r["line"], r["status"]) for r in records] == [(1, "PENDING"), (2, "REJECTED")]
    assert "0 completed, 0 failed, 1 rejected, 1 still pending (timed out)" in capsys.readouterr().out
