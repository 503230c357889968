"""A stub OpenAI Responses upstream for worker tests and benchmarks, run on its own thread.

The prompt steers it: "fail:<status>" always answers that status, "flaky:<n>:<tag>" fails with 503
the first n times, "slow:<seconds>:<tag>" sleeps that long; anything else answers after `latency`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

from aiohttp import web


class Upstream:
    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.calls: Counter[str] = Counter()
        self.inflight = 0
        self.peak = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Upstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/responses", self._responses)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        self._loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()  # handlers still sleeping on a "slow:" prompt
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    async def _responses(self, request: web.Request) -> web.Response:
        prompt = str((await request.json())["input"])
        self.calls[prompt] += 1
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            parts = prompt.split(":")
            if parts[0] == "fail":
                return web.json_response({"error": {"message": "no"}}, status=int(parts[1]))
            if parts[0] == "flaky" and self.calls[prompt] <= int(parts[1]):
                return web.json_response({"error": {"message": "busy"}}, status=503)
            await asyncio.sleep(float(parts[1]) if parts[0] == "slow" else self.latency)
            return web.json_response(answer(prompt))
        finally:
            self.inflight -= 1


def answer(prompt: str) -> dict[str, Any]:
    text = {"type": "output_text", "text": f"answer to {prompt}", "annotations": []}
    return {"status": "completed", "model": "stub", "output": [{"type": "message", "content": [text]}]}
