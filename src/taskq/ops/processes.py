"""Child processes of `taskq up`: spawned in their own session with a log file, stopped in order."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _death_signal() -> Callable[[], None] | None:
    """A preexec hook making Linux send SIGTERM to the child if `up` itself dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


def spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Child:
    """Start `python -m taskq <argv>` in a new session, so a terminal Ctrl-C reaches only `up`, which
    then stops the children in the order that loses nothing."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskq", *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_death_signal(),  # runs in the child, before exec
        )
    return Child(name, proc, log)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a member we cannot signal still exists
        return True
    return True


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop(child: Child, grace: float, force: threading.Event) -> int | None:
    """SIGTERM the child, wait up to grace seconds (less if force is set), then SIGKILL its group.

    Returns the exit code. Members of its process group that outlive it (pool processes) are
    terminated too, so nothing the stack started keeps running.
    """
    if child.alive:
        child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while child.alive and time.monotonic() < deadline and not force.is_set():
        time.sleep(0.05)
    if child.alive:
        _killpg(child.proc.pid, signal.SIGKILL)
    code = child.proc.wait()
    if _group_alive(child.proc.pid):
        _killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + min(grace, 5.0)
        while _group_alive(child.proc.pid) and time.monotonic() < deadline and not force.is_set():
            time.sleep(0.05)
        _killpg(child.proc.pid, signal.SIGKILL)
    return code


@contextlib.contextmanager
def interrupts_blocked() -> Iterator[None]:
    """Block SIGINT while starting a process we cannot put in its own session (the embedded Redis).

    A blocked signal mask is inherited across exec, so a terminal Ctrl-C does not stop Redis before
    the workers have released their tasks into it; `up` stops it last with SIGTERM.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False
