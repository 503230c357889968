"""Production serving of the intake: gunicorn processes, each running the ASGI app on uvicorn's loop."""

from __future__ import annotations

import gc
from typing import Any

from gunicorn.app.base import BaseApplication
from uvicorn_worker import UvicornWorker

#: gunicorn's graceful_timeout: how long a stopping process may take before it is killed.
GRACEFUL_SECONDS = 10


class IntakeWorker(UvicornWorker):  # type: ignore[misc]
    """uvicorn under gunicorn with its fast parts: uvloop's event loop and httptools' HTTP parser; no
    access log (taskq logs what matters itself). A stopping process cancels the requests still
    running a little before gunicorn would kill it: a waiting monitor call then cancels its call
    (never charged) instead of leaving it to run unanswered."""

    CONFIG_KWARGS = {
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "timeout_graceful_shutdown": GRACEFUL_SECONDS - 2,
    }


class _Intake(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from taskq.api.asgi import create_asgi

        app = create_asgi()
        # A 500-task batch allocates ~10^5 objects: with the default thresholds the collector runs
        # several young and full passes inside one request. Keep what exists now out of its scans
        # and let it run less often (memory stays bounded: everything per request is short-lived).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        return app


def serve(*, host: str, port: int, workers: int) -> None:
    """Run the intake until interrupted; each gunicorn worker builds its own app and Redis clients."""
    _Intake(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "taskq.server.IntakeWorker",
            "accesslog": None,
            "graceful_timeout": GRACEFUL_SECONDS,
            "keepalive": 5,
        }
    ).run()
