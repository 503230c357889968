"""A provider adapter run against canned replies (httpx.MockTransport), no network involved."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from taskq.providers import ADAPTERS, PAYLOAD_MODELS, ProviderConfig, ProviderError


@dataclass
class Replies:
    """Canned provider replies through httpx.MockTransport: answers with its replies in turn (the last one
    repeats) and records every request."""

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
    upstream: Replies,
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


def adapter_error(task_type: str, payload: dict[str, Any], upstream: Replies) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        run_adapter(task_type, payload, upstream)
    return info.value
