"""The simulator's and the recorded upstream bodies are what the official SDKs accept, and read the same.

Each body is validated with the response type the provider's own SDK parses it into (openai
``Response``, google-genai ``GenerateContentResponse``, perplexityai ``CompletionResponseOutput``), and
the answer the SDK reads from it must be the one our adapter reads. xAI (gRPC SDK only), SerpApi and
Google News RSS have no such type.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
from google.genai.types import GenerateContentResponse
from openai.types.responses import Response, WebSearchTool
from perplexity.generated.api import CompletionResponseOutput
from pydantic import BaseModel

from taskq.providers import ADAPTERS, PAYLOAD_MODELS, ProviderConfig
from taskq.simulator.bodies import Ask, success

SDK_TYPES: dict[str, type[BaseModel]] = {
    "CHATGPT": Response,
    "GEMINI": GenerateContentResponse,
    "PERPLEXITY": CompletionResponseOutput,
}
FLAVORS = {"CHATGPT": "openai", "GEMINI": "gemini", "PERPLEXITY": "perplexity"}
RECORDED = {
    "CHATGPT": "openai_web_search.json",
    "GEMINI": "gemini_grounded.json",
    "PERPLEXITY": "perplexity_sonar.json",
}
PAYLOAD = {"prompt": "tide tables in Lisbon", "country": "PT", "include": {"rawResponse": True}}
_THINK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


def sdk_text(task_type: str, parsed: Any) -> str:
    """The answer text as each SDK's users read it."""
    if task_type == "CHATGPT":
        return str(parsed.output_text)
    if task_type == "GEMINI":
        return str(parsed.text)  # the non-thought text parts, joined
    return _THINK.sub("", str(parsed.choices[0].message.content))


def call_simulator(url: str, task_type: str, model: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            config = ProviderConfig(url, "sk-sim", model, 5.0)
            payload = PAYLOAD_MODELS[task_type].model_validate(PAYLOAD)
            return await ADAPTERS[task_type](payload, client, config)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("task_type", "model"),
    [
        ("CHATGPT", "gpt-5-mini"),
        ("GEMINI", "gemini-2.5-flash"),
        ("PERPLEXITY", "sonar"),
        ("PERPLEXITY", "sonar-reasoning-pro"),
    ],
)
def test_simulator_bodies_validate_as_the_sdk_response_and_read_the_same(
    simulator: Any, task_type: str, model: str
) -> None:
    result = call_simulator(simulator.url, task_type, model)
    body = result["rawResponse"][0]
    parsed = SDK_TYPES[task_type].model_validate(body)
    assert sdk_text(task_type, parsed) == result["text"]
    assert "[simulated]" in result["text"]


@pytest.mark.parametrize("task_type", list(SDK_TYPES))
def test_simulator_empty_answers_still_validate_as_the_sdk_response(task_type: str) -> None:
    ask = Ask(FLAVORS[task_type], "nothing to say", model="m", country="US", empty=True)
    parsed: Any = SDK_TYPES[task_type].model_validate(json.loads(success(ask).body))
    if task_type == "GEMINI":  # Gemini's empty variant is an answer without grounding metadata
        assert sdk_text(task_type, parsed) and parsed.candidates[0].grounding_metadata is None
    else:
        assert sdk_text(task_type, parsed) == ""


def test_the_openai_body_repeats_the_request_tools_as_the_sdk_types_them(simulator: Any) -> None:
    body = call_simulator(simulator.url, "CHATGPT", "gpt-5-mini")["rawResponse"][0]
    parsed = Response.model_validate(body)
    assert parsed.tool_choice == "required"
    assert [tool.type for tool in parsed.tools] == ["web_search"]
    [tool] = parsed.tools
    assert isinstance(tool, WebSearchTool)
    assert tool.user_location is not None and tool.user_location.country == "PT"
    assert getattr(parsed, "store", None) is False  # not a field of the SDK's type: an extra


@pytest.mark.parametrize("task_type", list(SDK_TYPES))
def test_recorded_bodies_validate_as_the_sdk_response_and_read_the_same(
    task_type: str, recorded: Any, upstream: Any, call: Any
) -> None:
    body = recorded(RECORDED[task_type])
    parsed = SDK_TYPES[task_type].model_validate(body)
    result = call(task_type, PAYLOAD, upstream(httpx.Response(200, json=body)))
    assert sdk_text(task_type, parsed) == result["text"]
