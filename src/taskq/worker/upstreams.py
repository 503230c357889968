"""Provider configurations for the worker: each configured task type's base URL, key, model and timeout."""

from __future__ import annotations

from taskq.providers import SPECS
from taskq.providers.base import ProviderConfig
from taskq.settings import Settings


def provider_configs(settings: Settings) -> dict[str, ProviderConfig]:
    """Configs of the task types that have a key (GOOGLE_NEWS needs none); upstream_base_url overrides all."""
    configs: dict[str, ProviderConfig] = {}
    for task_type in SPECS:
        key = settings.provider_key(task_type)
        if key is None:
            continue
        upstream = settings.upstream(task_type)
        base_url = settings.upstream_base_url or upstream.base_url
        configs[task_type] = ProviderConfig(
            base_url=base_url.rstrip("/"),
            api_key=key,
            model=upstream.model,
            timeout=settings.provider_timeout(task_type),
        )
    return configs
