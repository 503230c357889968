"""The embedded server after a crash that cut its AOF inside a transaction.

Redis 7.0 and Valkey 8.1 truncate such an AOF after the last whole command, which can leave a MULTI
without its EXEC in the file; they drop that transaction from memory but keep appending after it.
At the next restart the dangling MULTI swallows the commands written since, and replays the half of
the transaction with them (valkey-io/valkey#4342 fixes the server). taskq's scripts are written to the
AOF as such transactions, so a half-admitted batch would come back after a second crash, with tasks
counted as queued that no lane holds. The embedded server rewrites its AOF right after any such
truncation, so the file matches memory before anything more is appended.
"""

from __future__ import annotations

import signal
from pathlib import Path

import redis

from taskq.embedded import EmbeddedServer
from tests.support.redis_server import free_port

SCRIPT = "redis.call('SET', KEYS[1], 'first') redis.call('SET', KEYS[2], 'second') return 1"


def _cut_before_last_exec(aof_dir: Path) -> None:
    """What a crash in the middle of writing the last transaction leaves: its EXEC half written."""
    [incr] = sorted(aof_dir.glob("*.incr.aof"))
    data = incr.read_bytes()
    cut = data.rindex(b"*1\r\n$4\r\nEXEC\r\n")
    incr.write_bytes(data[: cut + 8])  # a short read: "*1\r\n$4\r\n" and no more


def test_a_transaction_cut_by_a_crash_never_comes_back_after_the_next_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    server = EmbeddedServer(free_port(), str(data_dir)).start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.set("before", "1")
    client.eval(SCRIPT, 2, "half:a", "half:b")  # the transaction the crash will cut
    server.stop()
    _cut_before_last_exec(data_dir / "appendonlydir")

    server = EmbeddedServer(server.port, str(data_dir)).start()  # truncates the AOF: a MULTI dangles
    client = redis.Redis.from_url(server.url, decode_responses=True)
    assert client.get("before") == "1" and client.get("half:a") is None
    for i in range(3):
        client.set(f"after:{i}", "1")
    client.eval(SCRIPT, 2, "later:a", "later:b")  # its EXEC would close the dangling MULTI
    client.set("after:last", "1")
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)  # a second crash
    server.process.wait(10)
    server.process = None

    server = EmbeddedServer(server.port, str(data_dir)).start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        assert client.get("half:a") is None and client.get("half:b") is None, "the cut transaction came back"
        assert [client.get(f"after:{i}") for i in range(3)] == ["1", "1", "1"]
        assert client.get("later:a") == "first" and client.get("after:last") == "1"
    finally:
        server.stop()
