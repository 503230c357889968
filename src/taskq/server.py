"""Production WSGI serving of the intake under gunicorn."""

from __future__ import annotations

import contextlib
import errno
import gc
import socket
import threading
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import TConn, ThreadWorker


class IntakeWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's threaded worker, for bursts of waiting synchronous calls: its threads all started
    when the process starts, and every connection waiting accepted at each wake-up.

    gunicorn starts a pool thread on demand, in its one accepting thread: in the first burst after a
    start, that thread spent a fifth of its time starting threads (each start waits for the new
    thread to run, in competition for the GIL with the hundreds already serving), and accepted one
    connection per wake-up of its event loop."""

    def get_thread_pool(self) -> Any:
        pool = super().get_thread_pool()
        _prestart(pool, self.cfg.threads)
        return pool

    def accept(self, listener: Any) -> None:
        while self.nr_conns < self.worker_connections:
            try:
                client_sock, client_addr = listener.accept()
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    raise
                return
            self.nr_conns += 1
            client_sock.setblocking(True)
            self.enqueue_req(_Conn(self.cfg, client_sock, client_addr, listener.getsockname()))


class _Conn(TConn):  # type: ignore[misc]
    """A new connection whose request is usually there by the time a thread takes it: one peek
    tells, instead of gunicorn's selector made for each connection (four system calls)."""

    data_ready: bool

    def wait_for_data(self, timeout: float) -> bool:
        if not self.data_ready:
            try:
                self.data_ready = bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return False
        return bool(super().wait_for_data(timeout))


def _prestart(pool: Any, threads: int) -> None:
    """Make the pool start all its threads now: each task holds its thread until all have one."""
    gate = threading.Barrier(threads, timeout=60)

    def started() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            gate.wait()

    for _ in range(threads):
        pool.submit(started)


class _Intake(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from taskq.api import create_app

        app = create_app()
        # A 500-task batch allocates ~10^5 objects: with the default thresholds the collector runs
        # several young and full passes inside one request. Keep what exists now out of its scans
        # and let it run less often (memory stays bounded: everything per request is short-lived).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        return app


def serve(*, host: str, port: int, workers: int, threads: int) -> None:
    """Run the intake until interrupted; each gunicorn worker builds its own app and Redis client."""
    _Intake(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "taskq.server.IntakeWorker" if threads > 1 else "sync",
            "accesslog": None,
            "graceful_timeout": 10,
            "keepalive": 5,
        }
    ).run()
