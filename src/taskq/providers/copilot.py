"""COPILOT adapter: Microsoft Copilot through SerpApi engine=bing_copilot (text_blocks + references).

bing_copilot takes no country or language parameter, so the task's country is not applied.
"""

from __future__ import annotations

from typing import Any

import httpx

from taskq.providers import serpapi
from taskq.providers.base import ProviderConfig, boundary, narrow
from taskq.providers.spec import ProviderSpec
from taskq.schemas.payloads import CopilotPayload, Payload

PROVIDER = "SerpApi"


def request_params(payload: CopilotPayload) -> dict[str, str]:
    # Country not applied: the engine has no such parameter, and rewriting the prompt would change the task.
    return {"engine": "bing_copilot", "q": payload.prompt}


async def run(payload: Payload, client: httpx.AsyncClient, config: ProviderConfig) -> dict[str, Any]:
    with boundary(PROVIDER):
        task = narrow(payload, CopilotPayload, PROVIDER)
        body = await serpapi.search(client, config, request_params(task))
        text, markdown, sources = serpapi.answer_blocks(body, "bing_copilot")
        result: dict[str, Any] = {"text": text, "sources": sources.items}
        if task.include.markdown:
            result["markdown"] = markdown
        if task.include.rawResponse:
            result["rawResponse"] = [body]
        return result


SPEC = ProviderSpec(
    task_type="COPILOT",
    payload=CopilotPayload,
    run=run,
    upstream=serpapi.UPSTREAM,
    price=5,
    timeout=90.0,
)
