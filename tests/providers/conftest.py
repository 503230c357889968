"""Fixtures for adapter tests: recorded upstream bodies, a MockTransport upstream, a loopback simulator."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from taskq.providers import ADAPTERS, PAYLOAD_MODELS, ProviderConfig, ProviderError
from taskq.simulator.app import create_app

BODIES = Path(__file__).parent / "bodies"


@dataclass
class Upstream:
    """A fake upstream: answers with its replies in turn (the last one repeats) and records every request."""

    replies: list[httpx.Response | Exception]
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    @property
    def last_json(self) -> Any:
        return json.loads(self.requests[-1].content)


def run_adapter(
    task_type: str,
    payload: dict[str, Any],
    upstream: Upstream,
    *,
    model: str = "test-model",
    timeout: float = 5.0,
) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        transport = httpx.MockTransport(upstream.handle)
        async with httpx.AsyncClient(transport=transport) as client:
            config = ProviderConfig("https://upstream.test", "sk-test", model, timeout)
            return await ADAPTERS[task_type](
                PAYLOAD_MODELS[task_type].model_validate(payload), client, config
            )

    return asyncio.run(go())


def adapter_error(task_type: str, payload: dict[str, Any], upstream: Upstream) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        run_adapter(task_type, payload, upstream)
    return info.value


@pytest.fixture
def recorded() -> Callable[[str], Any]:
    """Load a recorded body: parsed JSON for .json files, bytes otherwise."""

    def load(name: str) -> Any:
        raw = (BODIES / name).read_bytes()
        return json.loads(raw) if name.endswith(".json") else raw

    return load


@pytest.fixture
def upstream() -> Callable[..., Upstream]:
    return lambda *replies: Upstream(list(replies))


@pytest.fixture
def call() -> Callable[..., dict[str, Any]]:
    return run_adapter


@pytest.fixture
def fails() -> Callable[..., ProviderError]:
    return adapter_error


class LoopbackSimulator:
    """The real simulator app served on 127.0.0.1 from a background thread with its own event loop."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""

    def __enter__(self) -> LoopbackSimulator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._runner = web.AppRunner(create_app(**self._options), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture(scope="module")
def simulator() -> Iterator[LoopbackSimulator]:
    with LoopbackSimulator(seed=1) as sim:
        yield sim


@pytest.fixture
def make_simulator() -> type[LoopbackSimulator]:
    """For tests that need their own simulator options (latency, error rate)."""
    return LoopbackSimulator
