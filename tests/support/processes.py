"""Real taskq processes for the proof tests, each in its own session: an intake, workers, the simulator."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.env import PROVIDER_ENV
from tests.support.redis_server import free_port
from tests.support.waits import wait_for


class Processes:
    """Child processes, each the leader of its own session, so a whole `taskq worker` tree can be killed."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []
        self.names: dict[int, str] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, *args],
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(proc)
        self.names[proc.pid] = name
        return proc

    def taskq(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return self.start(name, ["-m", "taskq", *argv], env)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @staticmethod
    def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        """Signal every process of the child's session: RQ puts its work horse in a process group of
        its own (setpgrp), so killing the process group alone would leave the horse running."""
        for pid in session_members(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill_group(self, proc: subprocess.Popen[bytes]) -> None:
        """kill -9 the process and everything it started (RQ pool, worker, work horse)."""
        self.signal_group(proc, signal.SIGKILL)
        proc.wait(10)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
        """SIGTERM, then SIGKILL of the group if it does not exit in time; returns the exit code."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(proc, signal.SIGKILL)
                proc.wait(10)
        self.signal_group(proc, signal.SIGKILL)  # leftovers of the tree, if any
        return proc.returncode

    def close(self) -> None:
        for proc in self.started:
            self.signal_group(proc, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def session_members(sid: int) -> list[int]:
    """Ids of the live processes in session sid (Linux /proc), the leader first."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry))
    return sorted(members, key=lambda pid: pid != sid)


def worker_env(redis_url: str, upstream: str, **extra: str) -> dict[str, str]:
    """Environment of a `taskq worker` (or intake) against this Redis and the simulator; webhooks to 127/8."""
    return {
        "TASKQ_REDIS_URL": redis_url,
        "TASKQ_UPSTREAM_BASE_URL": upstream,
        "TASKQ_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "TASKQ_WORKER_IDLE_WAIT_SECONDS": "0.5",
        "TASKQ_LOG_LEVEL": "WARNING",
        **PROVIDER_ENV,
        **extra,
    }


def start_simulator(procs: Processes, latency: str = "0", name: str = "simulator") -> str:
    port = free_port()
    procs.taskq(name, ["simulator", "--port", str(port), "--latency", latency], {})
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(url + "/healthz"), 30, "the simulator")
    return url


def start_intake(procs: Processes, env: dict[str, str], workers: int = 1, threads: int = 4) -> str:
    port = free_port()
    argv = ["serve", "--port", str(port), "--workers", str(workers), "--threads", str(threads)]
    procs.taskq("intake", argv, env)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(url + "/healthz"), 30, "the intake")
    return url


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
