"""Production WSGI serving of the intake under gunicorn."""

from __future__ import annotations

import gc
from typing import Any

from gunicorn.app.base import BaseApplication


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
            "worker_class": "gthread" if threads > 1 else "sync",
            "accesslog": None,
            "graceful_timeout": 10,
            "keepalive": 5,
        }
    ).run()
