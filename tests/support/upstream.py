"""The provider upstream of the tests, served from a thread of the test process.

`Upstream(latency, simulator=True, **options)` serves the real provider simulator (every provider's
wire format; options as its create_app takes them: error_rate, seed, rate_limit, quota, revoked).
`Upstream(latency)` serves a minimal OpenAI Responses upstream the prompt steers: "fail:<status>"
always answers that status, "flaky:<n>:<tag>" fails with 503 the first n times, "slow:<seconds>:<tag>"
sleeps that long; anything else answers "answer to <prompt>" after `latency`; it counts the calls per
prompt and the peak of calls in flight.

Either way `down` is an outage switch: while it is set every provider call is answered 503 in the
provider's own error shape (health checks still pass), and counted in `refused`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

from aiohttp import web

from taskq.simulator import app as provider_simulator
from taskq.simulator.bodies import Ask
from taskq.simulator.faults import failure
from tests.support.served import Served


class Upstream(Served):
    def __init__(self, latency: float | str = 0.0, *, simulator: bool = False, **options: Any) -> None:
        self.latency = float(latency)
        self.simulator = simulator
        self.calls: Counter[str] = Counter()  # the stub's calls per prompt
        self.inflight = 0
        self.peak = 0
        self.down = threading.Event()
        self.refused = 0
        if simulator:
            app = provider_simulator.create_app(latency, **options)
        else:
            assert not options, f"the stub upstream takes no options: {options}"
            app = web.Application()
            app.router.add_post("/v1/responses", self._responses)
        app.middlewares.append(self._outage)
        super().__init__(app, handler_cancellation=simulator)

    def __enter__(self) -> Upstream:
        super().__enter__()
        return self

    def simulator_calls(self, status: int | None = None) -> list[Any]:
        """The simulator's record of its calls (arrival ms, flavour, key, status...), one status or all."""
        assert self.simulator, "only the simulator records its calls"
        return [c for c in self.app[provider_simulator.STATE].calls if status is None or c[3] == status]

    @web.middleware
    async def _outage(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self.down.is_set() or request.path == "/healthz":
            response: web.StreamResponse = await handler(request)
            return response
        self.refused += 1
        reply = failure(Ask("openai", ""), "503")
        headers = {**reply.headers, "Content-Type": f"{reply.content_type}; charset=utf-8"}
        return web.Response(status=reply.status, body=reply.body, headers=headers)

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
