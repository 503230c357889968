"""An aiohttp app served on a free loopback port from a thread of the test process, with its own loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web


class Served:
    """`with Served(app) as s:` serves app at s.url until the block ends (hanging handlers are cancelled)."""

    def __init__(
        self,
        app: web.Application,
        path: str = "",
        *,
        on_stop: Callable[[], Any] | None = None,
        handler_cancellation: bool = False,
    ) -> None:
        self.app, self.path, self.url = app, path, ""
        self._on_stop = on_stop
        self._cancellation = handler_cancellation
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=0.1, handler_cancellation=self._cancellation
        )
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start())
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}{self.path}"
        self._ready.set()
        self._loop.run_forever()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()  # handlers still sleeping or hanging
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def __enter__(self) -> Served:
        self._thread.start()
        assert self._ready.wait(10), "the server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._on_stop is not None:
            self._loop.call_soon_threadsafe(self._on_stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
