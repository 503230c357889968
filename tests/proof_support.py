"""Plumbing for the proof tests: real processes in their own sessions, a private redis-server, a webhook
receiver that can be switched off, and reads of task records. A plain module, not a test file."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from aiohttp import web

from taskq.embedded import server_binary
from taskq.keys import Shard
from taskq.simulator import app as simulator
from taskq.simulator.bodies import Ask
from taskq.simulator.faults import failure

PROVIDER_ENV = {
    "TASKQ_OPENAI_API_KEY": "sk-test",
    "TASKQ_GEMINI_API_KEY": "g-test",
    "TASKQ_PERPLEXITY_API_KEY": "pplx-test",
    "TASKQ_XAI_API_KEY": "xai-test",
    "TASKQ_SERPAPI_API_KEY": "serp-test",
}


def env_int(name: str, default: int) -> int:
    """A size knob of a proof test: CI-friendly default, full size through the environment."""
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.05,
    stuck: Callable[[], str] | None = None,
) -> float:
    """Poll until check() is truthy; return the seconds it took.

    On timeout the message says what was still stuck: stuck() (e.g. `stuck_work`) describes it.
    """
    start = time.monotonic()
    while not check():
        if time.monotonic() - start >= timeout:
            detail = f"; still stuck: {stuck()}" if stuck is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(interval)
    return time.monotonic() - start


def stuck_work(
    client: redis.Redis, shard: Shard, org: str | None = None, ids: list[str] | None = None, sample: int = 5
) -> str:
    """What a shard still holds: the org's counters, tasks queued (per lane), leased, delayed, webhook
    deliveries waiting and being sent, with a few ids of each and their state (for timeout messages);
    with ids, how many of those tasks are in each (status, webhook state) and a few unfinished ones."""
    parts = []
    if ids:
        rows = task_fields(client, shard, ids, ["status", "wh_state", "d_log"])
        counts = Counter((status, wh_state) for status, wh_state, _ in rows)
        odd = [(i, r) for i, r in zip(ids, rows, strict=True) if r[:2] != ["COMPLETED", "delivered"]][:sample]
        shown = "; ".join(
            f"{i} {r[0]}/{r[1]} last attempt {(r[2] or '').rsplit(chr(10), 1)[-1]}" for i, r in odd
        )
        parts.append(f"tasks by (status, webhook state) {dict(counts)} (e.g. {shown})")
    if org is not None:
        parts.append(f"org counters {org_counters(client, shard, org)}")
    for lane in sorted(client.scan_iter(match=shard.lane("*", "*"), count=1000)):
        ids = client.zrange(lane, 0, sample - 1)
        parts.append(f"queued in {lane}: {client.zcard(lane)} (e.g. {_task_states(client, shard, ids)})")
    now = time.time() * 1000
    for name, key in (("leased", shard.proc), ("delayed", shard.delayed)):
        entries = client.zrange(key, 0, sample - 1, withscores=True)
        ids = [i for i, _ in entries]
        due = ", ".join(f"{i} due in {(score - now) / 1000:.1f} s" for i, score in entries)
        parts.append(f"{name}: {client.zcard(key)} ({due}; {_task_states(client, shard, ids)})")
    for name, key in (("webhooks waiting", shard.wh_due), ("webhooks being sent", shard.wh_proc)):
        entries = client.zrange(key, 0, sample - 1, withscores=True)
        shown = []
        for delivery, score in entries:
            hash_key, prefix = shard.delivery_record(delivery)
            state, attempts, log = client.hmget(
                hash_key, [prefix + "state", prefix + "attempts", prefix + "log"]
            )
            last = (log or "").rsplit("\n", 1)[-1]
            due = (score - now) / 1000
            shown.append(
                f"{delivery} {state} after {attempts} attempts, next in {due:.1f} s, last attempt {last}"
            )
        parts.append(f"{name}: {client.zcard(key)} ({'; '.join(shown)})")
    return "; ".join(parts)


def _task_states(client: redis.Redis, shard: Shard, ids: list[Any]) -> str:
    fields = task_fields(client, shard, ids, ["status", "attempts", "error"])
    return ", ".join(f"{i} {status} attempts={attempts} {error or ''}".rstrip()
                     for i, (status, attempts, error) in zip(ids, fields, strict=True))  # fmt: skip


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


class SimulatorThread:
    """The provider simulator on a thread of the test process, with an outage switch: while `down` is set
    every provider call is answered 503 in the provider's own error shape (health checks still pass)."""

    def __init__(self, latency: str = "0") -> None:
        self.latency = latency
        self.down = threading.Event()
        self.refused = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="simulator", daemon=True)

    def __enter__(self) -> SimulatorThread:
        self._thread.start()
        assert self._ready.wait(10), "the simulator did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @web.middleware
    async def _outage(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self.down.is_set() or request.path == "/healthz":
            response: web.StreamResponse = await handler(request)
            return response
        self.refused += 1
        reply = failure(Ask("openai", ""), "503")
        headers = {**reply.headers, "Content-Type": f"{reply.content_type}; charset=utf-8"}
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = simulator.create_app(self.latency)
        app.middlewares.append(self._outage)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start())
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()


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


class RedisServer:
    """A private redis-server with AOF on a fixed port and directory, which can be crashed and restarted."""

    def __init__(self, workdir: Path, *, appendonly: bool = True, binary: str | None = None) -> None:
        binary = binary or shutil.which("redis-server") or server_binary()
        assert binary, "no redis-server binary (install redis-server)"
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec", "--logfile", str(self.workdir / "redis.log")]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ready, 30, "redis-server to load its data")
        return self

    def ready(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def crash(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.crash(signal.SIGTERM)


@dataclass
class Hit:
    at: float  # time.time() when it arrived
    webhook_id: str
    task_id: str | None
    verified: bool
    event: dict[str, Any] | None


@dataclass
class HookReceiver:
    """Webhook receiver on 127.0.0.1 that can be stopped (port closed) and started again on the same port.

    A process of its own (tests/support/hook_receiver.py) that verifies each Standard Webhooks
    signature with the organization's secrets, answers 204 (400 when the signature does not verify)
    closing the connection, so no kept-alive connection outlives stop(), and logs every request to a
    file that `hits` reads. In the test process, a receiver starved under load: a thread per
    connection (http.server) answered after the senders' 2 s and even 10 s timeouts.
    """

    secrets: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    go: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def prepare(self) -> HookReceiver:
        """Start the process without opening the port (start() opens it within milliseconds)."""
        if self.log is None:
            fd, name = tempfile.mkstemp(prefix="taskq-hooks-", suffix=".jsonl")
            os.close(fd)
            self.log = Path(name)
            atexit.register(self._remove_files)
        self.go = self.log.with_suffix(".go")
        self.go.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "tests.support.hook_receiver",
            str(self.port),
            str(self.log),
            str(self.go),
        ]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, cwd=Path(__file__).parent.parent)
        atexit.register(self.stop)  # a test that fails before its stop() leaves no receiver behind
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(self.secrets).encode())
        self.process.stdin.close()
        return self

    def start(self) -> HookReceiver:
        if self.process is None:
            self.prepare()
        assert self.go is not None
        self.go.touch()
        wait_for(self._listening, 30, "the webhook receiver to listen")
        return self

    def _listening(self) -> bool:
        assert self.process is not None and self.process.poll() is None, "the webhook receiver exited"
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def _remove_files(self) -> None:
        for path in (self.log, self.go):
            if path is not None:
                path.unlink(missing_ok=True)

    @property
    def hits(self) -> list[Hit]:
        if self.log is None or not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.endswith("}")]
        return [Hit(h["at"], h["webhookId"], h["taskId"], h["verified"], h["event"]) for h in lines]

    def event_ids_by_task(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for hit in self.hits:
            if hit.verified and hit.task_id:
                out[hit.task_id].add(hit.webhook_id)
        return dict(out)


def task_fields(client: redis.Redis, shard: Shard, ids: Iterable[str], names: list[str]) -> list[list[Any]]:
    """HMGET of the given fields for every task id, in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(shard.task(task_id), names)
    return list(pipe.execute())


def org_counters(client: redis.Redis, shard: Shard, org: str) -> dict[str, int]:
    raw = client.hgetall(shard.org(org))
    names = ("credits", "reserved", "queued", "inflight")
    return {name: int(raw.get(name, 0)) for name in names}
