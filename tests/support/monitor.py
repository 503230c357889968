"""Synchronous monitor calls in tests: a worker's side played with the scheduler's own ops, a request
left waiting on a plain socket, and a short poll for a condition."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

from taskq.scheduler import ALL_TYPES, Claimed, claim, complete
from taskq.store import Store
from tests.support.scheduler import Scheduler


def waiting(check: Callable[[], Any], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


def take(store: Store, org: str, k: int = 16) -> list[Claimed]:
    """Claim like a worker would (every type, no caps)."""
    shard = store.org(org).shard
    op = claim(shard, dict.fromkeys(ALL_TYPES), now=int(time.time() * 1000), lease_ms=30_000, k=k)
    return Scheduler(store.client).run(op)


def finish(store: Store, task: Claimed, result: dict[str, Any]) -> bool:
    op = complete(task, result, now=int(time.time() * 1000), retention=3600)
    return Scheduler(store.client).run(op)


def raw_request(base: str, key: str, body: dict[str, Any]) -> socket.socket:
    """A monitor request sent on a plain socket, left waiting for its answer."""
    host, port = base.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST /v1/monitor/chatgpt HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock
