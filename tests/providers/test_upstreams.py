"""provider_configs: which task types get a ProviderConfig, and from which settings."""

from __future__ import annotations

import os

import pytest

from taskq.providers.base import ProviderConfig
from taskq.settings import Settings
from taskq.worker.upstreams import provider_configs


@pytest.fixture(autouse=True)
def _no_taskq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TASKQ_"):
            monkeypatch.delenv(name)


def test_only_keyed_task_types_and_keyless_google_news_are_configured() -> None:
    configs = provider_configs(Settings(openai_api_key="sk-openai"))
    assert set(configs) == {"CHATGPT", "GOOGLE_NEWS"}
    assert configs["CHATGPT"] == ProviderConfig("https://api.openai.com", "sk-openai", "gpt-5-mini", 120.0)
    assert configs["GOOGLE_NEWS"] == ProviderConfig("https://news.google.com", "", "", 120.0)


def test_one_serpapi_key_enables_google_aimode_and_copilot() -> None:
    configs = provider_configs(Settings(serpapi_api_key="serp", serpapi_base_url="https://serp.example/"))
    assert {t for t, c in configs.items() if c.api_key == "serp"} == {"GOOGLE", "AIMODE", "COPILOT"}
    assert configs["AIMODE"].base_url == "https://serp.example"


def test_each_provider_reads_its_own_base_url_model_and_the_shared_timeout() -> None:
    settings = Settings(
        gemini_api_key="g",
        gemini_model="gemini-x",
        xai_api_key="x",
        xai_base_url="https://xai.example",
        perplexity_api_key="p",
        provider_timeout_seconds=9.5,
    )
    configs = provider_configs(settings)
    assert configs["GEMINI"] == ProviderConfig(
        "https://generativelanguage.googleapis.com", "g", "gemini-x", 9.5
    )
    assert configs["GROK"] == ProviderConfig("https://xai.example", "x", "grok-4-fast-non-reasoning", 9.5)
    assert configs["PERPLEXITY"].model == "sonar"


def test_upstream_base_url_points_every_adapter_at_one_address() -> None:
    settings = Settings(
        upstream_base_url="http://127.0.0.1:8765",
        openai_api_key="o",
        gemini_api_key="g",
        serpapi_api_key="s",
    )
    assert {c.base_url for c in provider_configs(settings).values()} == {"http://127.0.0.1:8765"}


def test_empty_key_counts_as_missing() -> None:
    assert "CHATGPT" not in provider_configs(Settings(openai_api_key=""))
