"""Structured logs: one JSON object per line with task context, and secrets never in the output."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from taskq.logs import configure, redact


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    """configure() binds a handler to this test's captured stderr: take it off again afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_task_context_and_mask_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure("json", "INFO")
    key = "sk_live_" + "ab12" * 8
    logging.getLogger("taskq.worker").warning(
        "provider failed for %s with whsec_c2VjcmV0c2VjcmV0c2VjcmV0 at https://x/?api_key=abc",
        key,
        extra={"task_id": "t-1", "org": "org_1", "provider": "CHATGPT", "attempt": 2},
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    entry = json.loads(line)
    assert entry["task_id"] == "t-1" and entry["org"] == "org_1" and entry["provider"] == "CHATGPT"
    assert entry["attempt"] == 2 and entry["level"] == "WARNING"
    assert key not in line and "c2VjcmV0" not in line and "api_key=abc" not in line
    assert "sk_live_ab12ab…" in entry["message"]


def test_redact_leaves_ordinary_text_alone() -> None:
    assert redact("task 3f2a finished in 12 ms") == "task 3f2a finished in 12 ms"
