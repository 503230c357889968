"""Reading a task file: JSON lines (one task per line) or one JSON array, each task with its position."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskq.ops import OpsError


@dataclass(frozen=True, slots=True)
class Entry:
    """One position of the file: a task to send, a local parse error, or a blank line to skip."""

    position: int
    task: Any = None
    error: dict[str, Any] | None = None
    blank: bool = False


@dataclass(frozen=True, slots=True)
class TaskFile:
    """A task file's entries; `label` is how positions are named ("line" 1-based, "index" 0-based)."""

    path: Path
    label: str
    size: int
    array: list[Any] | None = None  # a JSON array file is parsed once, up front

    @property
    def base(self) -> int:
        return 1 if self.label == "line" else 0

    def slot(self, position: int) -> int:
        """0-based row of a position in the ids file (which has one row per line or element)."""
        return position - self.base

    def entries(self) -> Iterator[Entry]:
        if self.array is not None:
            yield from (Entry(i, task) for i, task in enumerate(self.array))
            return
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    yield Entry(number, blank=True)
                    continue
                try:
                    yield Entry(number, json.loads(line))
                except json.JSONDecodeError as exc:
                    message = f"not valid JSON: {exc.msg} at column {exc.colno}"
                    yield Entry(number, error={"code": "INVALID_JSON", "message": message})
                except RecursionError:
                    yield Entry(number, error={"code": "INVALID_JSON", "message": "JSON nested too deeply"})


def _load_array(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise OpsError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise OpsError(f"{path}: a JSON file must hold an array of tasks")
    return data


def open_task_file(path: str) -> TaskFile:
    """Detect the format from the first non-blank character: '[' is a JSON array, anything else JSONL."""
    file = Path(path)
    try:
        with file.open(encoding="utf-8") as stream:
            head = stream.read(4096).lstrip()
            while not head and (chunk := stream.read(65536)):
                head = chunk.lstrip()
    except OSError as exc:
        raise OpsError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise OpsError(f"{path} is not UTF-8 text") from exc
    if head.startswith("["):
        array = _load_array(file)
        return TaskFile(file, "index", len(array), array)
    with file.open(encoding="utf-8") as stream:
        return TaskFile(file, "line", sum(1 for _ in stream))


def describe(error: dict[str, Any]) -> str:
    """An API error as one line: the field errors when there are any, else the message."""
    details = error.get("details")
    fields = details.get("errors") if isinstance(details, dict) else details
    if isinstance(fields, list) and fields:
        return "; ".join(f"{f.get('field')}: {f.get('message')}" for f in fields if isinstance(f, dict))
    return str(error.get("message", ""))
