"""Task files (JSON lines or one array) and the order `taskq submit --wait` writes results in."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from taskq.ops import OpsError
from taskq.ops.submit import Batch, ResultWriter, Submission
from taskq.ops.taskfile import describe, open_task_file


def test_jsonl_keeps_line_numbers_across_blank_and_broken_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n\n{oops\n  {"b": 2}  \n')

    source = open_task_file(str(path))
    entries = list(source.entries())

    assert (source.label, source.size) == ("line", 4)
    assert [(e.position, e.task, e.blank) for e in entries] == [
        (1, {"a": 1}, False), (2, None, True), (3, None, False), (4, {"b": 2}, False)
    ]  # fmt: skip
    assert entries[2].error is not None and entries[2].error["code"] == "INVALID_JSON"


def test_a_json_array_is_detected_after_leading_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('\n\n  [{"a": 1}, {"b": 2}]')

    source = open_task_file(str(path))

    assert (source.label, source.size, source.slot(0)) == ("index", 2, 0)
    assert [e.position for e in source.entries()] == [0, 1]


def test_a_json_file_that_is_not_an_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("[1, 2")
    with pytest.raises(OpsError, match="not valid JSON"):
        open_task_file(str(path))


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OpsError, match="cannot read"):
        open_task_file(str(tmp_path / "nope.jsonl"))


def test_describe_prefers_field_errors() -> None:
    error = {"code": "VALIDATION_ERROR", "message": "Invalid task at index 3",
             "details": {"errors": [{"field": "payload.country", "message": "bad"}]}}  # fmt: skip
    assert describe(error) == "payload.country: bad"
    assert describe({"code": "X", "message": "plain"}) == "plain"


def test_results_are_written_in_input_order_as_earlier_batches_finish(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("x\n" * 6)
    sub = Submission(open_task_file(str(path)), [""] * 6)
    sub.reject(3, {"code": "INVALID_JSON", "message": "m"})
    sub.local.append(3)
    first = Batch("b1", [1, 2, 4], 3)
    second = Batch("b2", [5, 6], 2)
    sub.batches += [first, second]
    out = io.StringIO()
    writer = ResultWriter(sub, out)

    second.records = {p: {"line": p, "status": "COMPLETED"} for p in (5, 6)}
    second.done = True
    writer.flush()
    assert out.getvalue() == ""  # the first batch is still running

    first.records = {p: {"line": p, "status": "COMPLETED"} for p in (1, 2, 4)}
    first.done = True
    writer.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["line"], r["status"]) for r in lines] == [(p, "COMPLETED") for p in (1, 2)] + [
        (3, "REJECTED")
    ] + [(p, "COMPLETED") for p in (4, 5, 6)]
    assert writer.statuses == {"COMPLETED": 5, "REJECTED": 1}
