"""Provider adapters: one module per task type, each declaring its ProviderSpec; SPECS is the registry."""

from __future__ import annotations

from taskq.providers import aimode, chatgpt, copilot, gemini, google, google_news, grok, perplexity
from taskq.providers.base import Adapter, ProviderConfig, ProviderError
from taskq.providers.spec import Limits, ProviderSpec, Upstream
from taskq.schemas.payloads import Payload

#: The registry: one line per provider. Its order is the order task types are listed in.
SPECS: dict[str, ProviderSpec] = {
    spec.task_type: spec
    for spec in (
        aimode.SPEC,
        google.SPEC,
        google_news.SPEC,
        gemini.SPEC,
        chatgpt.SPEC,
        copilot.SPEC,
        perplexity.SPEC,
        grok.SPEC,
    )
}

#: Views of the registry.
UPSTREAMS: dict[str, Upstream] = {spec.upstream.name: spec.upstream for spec in SPECS.values()}
ADAPTERS: dict[str, Adapter] = {task_type: spec.run for task_type, spec in SPECS.items()}
PAYLOAD_MODELS: dict[str, type[Payload]] = {task_type: spec.payload for task_type, spec in SPECS.items()}

__all__ = [
    "ADAPTERS",
    "PAYLOAD_MODELS",
    "SPECS",
    "UPSTREAMS",
    "Adapter",
    "Limits",
    "ProviderConfig",
    "ProviderError",
    "ProviderSpec",
    "Upstream",
]
