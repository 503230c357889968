"""The running stack's address card (.taskq/stack.json) and where submit and demo find URL and key."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskq.ops import OpsError
from taskq.settings import Settings

STACK_FILE = "stack.json"


def stack_path(settings: Settings) -> Path:
    """Where this `taskq up` writes its card."""
    return Path(settings.data_dir) / STACK_FILE


def find_stack_file(settings: Settings) -> Path:
    """The card to read: TASKQ_STACK_FILE (--stack) if set, else data_dir/stack.json in this directory
    or the nearest parent that has one (commands work from anywhere in the project), else here."""
    if settings.stack_file:
        return Path(settings.stack_file)
    relative = stack_path(settings)
    if relative.is_absolute():
        return relative
    here = Path.cwd()
    for directory in (here, *here.parents):
        if (directory / relative).is_file():
            return directory / relative
    return here / relative


def write_stack(settings: Settings, info: dict[str, Any]) -> Path:
    """Write the card readable by its owner only: it holds the stack's API key and webhook secret."""
    path = stack_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(info, out, indent=2)
        out.write("\n")
    tmp.replace(path)
    return path


def read_stack(settings: Settings, path: Path | None = None) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = json.loads((path or stack_path(settings)).read_text())
    except (OSError, ValueError):
        return None
    return info


def running_stack(settings: Settings) -> tuple[Path, dict[str, Any] | None]:
    """The card found (see find_stack_file) and its content if its `taskq up` is still running."""
    path = find_stack_file(settings)
    info = read_stack(settings, path)
    if info is not None and not _running(info.get("pid")):
        info = None  # left behind by a `taskq up` that was killed
    return path, info


def remove_stack(settings: Settings, pid: int) -> None:
    """Remove the card if this process wrote it (a second `up` may have replaced it)."""
    info = read_stack(settings)
    if info is not None and info.get("pid") == pid:
        stack_path(settings).unlink(missing_ok=True)


def _running(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class Target:
    """Where the tools send requests, and the stack card when one was used."""

    url: str
    api_key: str
    stack: dict[str, Any] | None


def resolve_target(settings: Settings, url: str | None, api_key: str | None) -> Target:
    """Flags first, then TASKQ_URL / TASKQ_API_KEY, then the card of a running `taskq up`."""
    path, stack = running_stack(settings)
    url = url or os.environ.get("TASKQ_URL") or (stack or {}).get("url")
    api_key = api_key or os.environ.get("TASKQ_API_KEY") or (stack or {}).get("apiKey")
    if not url or not api_key:
        where = "" if settings.stack_file else f" (nor {stack_path(settings)} in a parent directory)"
        raise OpsError(
            f"no running stack found at {path}{where}: start one with `taskq up`, name its stack file "
            "with --stack, or pass --url and --api-key (or set TASKQ_URL and TASKQ_API_KEY)"
        )
    return Target(url.rstrip("/"), api_key, stack)
