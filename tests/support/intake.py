"""taskq's ASGI intake served by uvicorn (uvloop, httptools: as `taskq serve` runs it) from a thread of
the test process, on a real Redis, with an HTTP client for it."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import uvicorn

from taskq.api.asgi import create_asgi
from taskq.settings import Settings
from tests.support.clients import Client
from tests.support.redis_server import free_port
from tests.support.waits import wait_for


class ServedIntake:
    """`with ServedIntake(settings, client, url) as intake:` serves the intake at intake.base; intake.http
    is a client for it (and intake.call(path, body, key) one POST on a client of its own)."""

    def __init__(self, settings: Settings, client: Client, url: str) -> None:
        self.app = create_asgi(settings, client=client, url=url)
        port = free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                                lifespan="on", log_level="warning", access_log=False)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.base, timeout=60)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedIntake:
        self._thread.start()
        wait_for(lambda: self.server.started, 20, "the intake to listen")
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.server.should_exit = True
        self._thread.join(20)

    def post(self, path: str, body: Any, key: str, **headers: str) -> httpx.Response:
        """One POST on a connection of its own (safe from any thread)."""
        with httpx.Client(base_url=self.base, timeout=60) as http:
            return http.post(path, json=body, headers={"Authorization": f"Bearer {key}", **headers})
