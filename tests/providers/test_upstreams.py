"""provider_configs: which task types get a ProviderConfig, and from which settings."""

from __future__ import annotations

import os

import pytest

from taskq.providers import SPECS
from taskq.providers.base import ProviderConfig
from taskq.settings import Settings
from taskq.worker.hosting import worker_class
from taskq.worker.upstreams import provider_configs


@pytest.fixture(autouse=True)
def _no_taskq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TASKQ_"):
            monkeypatch.delenv(name)


def test_only_keyed_task_types_and_keyless_google_news_are_configured() -> None:
    configs = provider_configs(Settings(openai_api_key="sk-openai"))
    assert set(configs) == {"CHATGPT", "GOOGLE_NEWS"}
    chatgpt, news = SPECS["CHATGPT"].timeout, SPECS["GOOGLE_NEWS"].timeout
    assert configs["CHATGPT"] == ProviderConfig("https://api.openai.com", "sk-openai", "gpt-5-mini", chatgpt)
    assert configs["GOOGLE_NEWS"] == ProviderConfig("https://news.google.com", "", "", news)


def test_one_serpapi_key_enables_google_aimode_and_copilot() -> None:
    configs = provider_configs(Settings(serpapi_api_key="serp", serpapi_base_url="https://serp.example/"))
    assert {t for t, c in configs.items() if c.api_key == "serp"} == {"GOOGLE", "AIMODE", "COPILOT"}
    assert configs["AIMODE"].base_url == "https://serp.example"


def test_each_provider_reads_its_own_base_url_model_and_the_global_timeout_override() -> None:
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


def test_each_task_type_gets_its_spec_timeout_by_default() -> None:
    configs = provider_configs(Settings(openai_api_key="o", serpapi_api_key="s"))
    assert {t: c.timeout for t, c in configs.items()} == {t: SPECS[t].timeout for t in configs}
    assert len({c.timeout for c in configs.values()}) > 1  # not one timeout for all


def test_a_per_task_type_timeout_wins_over_the_global_one_and_the_spec() -> None:
    settings = Settings(
        openai_api_key="o",
        serpapi_api_key="s",
        provider_timeout_seconds=40,
        provider_timeouts={"COPILOT": 200, "GOOGLE_NEWS": 5},
    )
    configs = provider_configs(settings)
    assert configs["COPILOT"].timeout == 200
    assert configs["GOOGLE_NEWS"].timeout == 5
    assert configs["CHATGPT"].timeout == configs["GOOGLE"].timeout == 40
    assert settings.longest_provider_timeout() == 200


def test_provider_timeouts_are_read_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_PROVIDER_TIMEOUTS", '{"GEMINI": 12.5}')
    settings = Settings()
    assert settings.provider_timeout("GEMINI") == 12.5
    assert settings.provider_timeout("GOOGLE_NEWS") == SPECS["GOOGLE_NEWS"].timeout


@pytest.mark.parametrize("timeouts", [{"CHATGTP": 30}, {"CHATGPT": 0}, {"CHATGPT": -1}])
def test_bad_provider_timeouts_are_refused_at_startup(timeouts: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="provider_timeouts"):
        Settings(provider_timeouts=timeouts)


def test_the_drain_job_timeout_covers_the_longest_provider_call() -> None:
    settings = Settings(provider_timeouts={"PERPLEXITY": 900})
    job_timeout = worker_class(settings, concurrency=10, drain_seconds=60).job_timeout
    assert job_timeout >= 60 + 900 + settings.shutdown_grace_seconds
