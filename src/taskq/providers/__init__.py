"""Provider adapters: one module per task type, each an async run(payload, client, config) -> result dict."""

from __future__ import annotations

from taskq.providers import aimode, chatgpt, copilot, gemini, google, google_news, grok, perplexity
from taskq.providers.base import Adapter, ProviderConfig, ProviderError

#: The adapter of each task type. Adding a provider is one module plus one line here.
ADAPTERS: dict[str, Adapter] = {
    "CHATGPT": chatgpt.run,
    "GEMINI": gemini.run,
    "PERPLEXITY": perplexity.run,
    "GROK": grok.run,
    "GOOGLE": google.run,
    "GOOGLE_NEWS": google_news.run,
    "AIMODE": aimode.run,
    "COPILOT": copilot.run,
}

__all__ = ["ADAPTERS", "Adapter", "ProviderConfig", "ProviderError"]
