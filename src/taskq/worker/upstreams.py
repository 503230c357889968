"""Provider configurations for the worker: each configured task type's base URL, key, model and timeout."""

from __future__ import annotations

from taskq.providers.base import ProviderConfig
from taskq.schemas.tasks import TaskType
from taskq.settings import Settings

#: Which settings prefix holds the base URL and model of each task type (SerpApi serves three).
_PREFIX: dict[TaskType, str] = {
    TaskType.CHATGPT: "openai",
    TaskType.GEMINI: "gemini",
    TaskType.PERPLEXITY: "perplexity",
    TaskType.GROK: "xai",
    TaskType.GOOGLE: "serpapi",
    TaskType.AIMODE: "serpapi",
    TaskType.COPILOT: "serpapi",
    TaskType.GOOGLE_NEWS: "google_news",
}


def provider_configs(settings: Settings) -> dict[str, ProviderConfig]:
    """Configs of the task types that have a key (GOOGLE_NEWS needs none); upstream_base_url overrides all."""
    configs: dict[str, ProviderConfig] = {}
    for task_type, prefix in _PREFIX.items():
        key = settings.provider_key(task_type)
        if key is None:
            continue
        base_url = settings.upstream_base_url or str(getattr(settings, f"{prefix}_base_url"))
        configs[task_type.value] = ProviderConfig(
            base_url=base_url.rstrip("/"),
            api_key=key,
            model=str(getattr(settings, f"{prefix}_model", "")),
            timeout=settings.provider_timeout_seconds,
        )
    return configs
