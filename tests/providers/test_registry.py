"""The provider registry: every table of task types is read from the specs, and settings come from them."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from taskq.api.openapi import document
from taskq.providers import ADAPTERS, PAYLOAD_MODELS, SPECS, UPSTREAMS
from taskq.schemas.tasks import TASK_TYPES, TaskType, parse_task
from taskq.settings import DEFAULT_PRICES, Settings, key_setting
from taskq.worker.upstreams import provider_configs

#: The environment variables operators already use; they must keep working.
LEGACY_KEY_SETTINGS = {
    "CHATGPT": "TASKQ_OPENAI_API_KEY",
    "GEMINI": "TASKQ_GEMINI_API_KEY",
    "PERPLEXITY": "TASKQ_PERPLEXITY_API_KEY",
    "GROK": "TASKQ_XAI_API_KEY",
    "GOOGLE": "TASKQ_SERPAPI_API_KEY",
    "AIMODE": "TASKQ_SERPAPI_API_KEY",
    "COPILOT": "TASKQ_SERPAPI_API_KEY",
    "GOOGLE_NEWS": None,
}


@pytest.fixture(autouse=True)
def _no_taskq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TASKQ_"):
            monkeypatch.delenv(name)


def test_task_types_payloads_adapters_and_prices_all_come_from_the_specs() -> None:
    assert [t.value for t in TaskType] == list(SPECS) == list(TASK_TYPES)
    assert {t: s.payload for t, s in SPECS.items()} == PAYLOAD_MODELS
    assert {t: s.run for t, s in SPECS.items()} == ADAPTERS
    assert {t: s.price for t, s in SPECS.items()} == DEFAULT_PRICES
    assert all(spec.task_type == task_type for task_type, spec in SPECS.items())
    schemas = document()["components"]["schemas"]
    assert schemas["Task"]["properties"]["taskType"]["enum"] == list(SPECS)
    assert [v["properties"]["taskType"]["const"] for v in schemas["TaskRequest"]["oneOf"]] == list(SPECS)


def test_a_task_of_every_registered_type_parses_with_its_spec_payload_model() -> None:
    for task_type, spec in SPECS.items():
        fields = spec.payload.model_fields
        payload = {"prompt" if "prompt" in fields else "query": "hello", "country": "US"}
        parsed = parse_task({"taskType": task_type, "payload": payload})
        assert not isinstance(parsed, list), parsed
        assert parsed.task_type == task_type and isinstance(parsed.payload, spec.payload)


def test_the_existing_key_variables_enable_the_same_task_types() -> None:
    assert {t: key_setting(t) for t in SPECS} == LEGACY_KEY_SETTINGS


@pytest.mark.parametrize("task_type", [t for t, env in LEGACY_KEY_SETTINGS.items() if env])
def test_key_base_url_and_model_are_read_from_the_environment(
    task_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = LEGACY_KEY_SETTINGS[task_type]
    assert env is not None
    prefix = env.removesuffix("_API_KEY")
    monkeypatch.setenv(env, "key-from-env")
    monkeypatch.setenv(f"{prefix}_BASE_URL", "https://upstream.example/")
    monkeypatch.setenv(f"{prefix}_MODEL", "model-from-env")
    settings = Settings()
    config = provider_configs(settings)[task_type]
    assert config.api_key == "key-from-env"
    assert config.base_url == "https://upstream.example"
    has_model = SPECS[task_type].upstream.model is not None
    assert config.model == ("model-from-env" if has_model else "")


def test_every_upstream_setting_declared_by_a_spec_is_read_from_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for upstream in UPSTREAMS.values():
        for setting in upstream.settings:
            monkeypatch.setenv(f"TASKQ_{setting.upper()}", f"{setting}-value")
    settings = Settings()
    for name, upstream in UPSTREAMS.items():
        values = settings.upstreams[name]
        assert values.base_url == f"{name}_base_url-value"
        if upstream.model is not None:
            assert values.model == f"{name}_model-value"
        if upstream.keyed:
            keys = [k.get_secret_value() for k in values.api_keys]
            assert keys == [f"{name}_api_key-value", f"{name}_api_keys-value"]


def test_defaults_are_the_specs_defaults() -> None:
    settings = Settings()
    for name, upstream in UPSTREAMS.items():
        assert settings.upstreams[name].base_url == upstream.base_url
        assert settings.upstreams[name].model == (upstream.model or "")
        assert settings.upstreams[name].api_keys == ()
    assert set(provider_configs(settings)) == {t for t, s in SPECS.items() if not s.upstream.keyed}


@pytest.mark.parametrize("value", ["sk-1, sk-2,sk-3", '["sk-1", "sk-2", "sk-3"]'])
def test_a_key_list_is_read_as_comma_separated_or_json_and_the_first_key_is_used(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKQ_OPENAI_API_KEYS", value)
    settings = Settings()
    assert [k.get_secret_value() for k in settings.upstream("CHATGPT").api_keys] == ["sk-1", "sk-2", "sk-3"]
    assert settings.provider_key("CHATGPT") == "sk-1"
    assert settings.provider_keys("CHATGPT") == ("sk-1", "sk-2", "sk-3")
    assert settings.provider_keys("GOOGLE_NEWS") == ("",) and settings.provider_keys("GEMINI") == ()
    assert provider_configs(settings)["CHATGPT"].api_key == "sk-1"


def test_the_single_key_comes_first_in_the_pool_and_duplicates_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKQ_OPENAI_API_KEY", "sk-main")
    monkeypatch.setenv("TASKQ_OPENAI_API_KEYS", "sk-2,sk-main")
    keys = Settings().upstream("CHATGPT").api_keys
    assert [k.get_secret_value() for k in keys] == ["sk-main", "sk-2"]


def test_keyword_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("TASKQ_GEMINI_MODEL", "gemini-env")
    settings = Settings(openai_api_key="sk-arg", gemini_model="gemini-arg")
    assert settings.provider_key("CHATGPT") == "sk-arg"
    assert settings.upstream("GEMINI").model == "gemini-arg"
    assert Settings(openai_api_key=None).provider_key("CHATGPT") is None


def test_keys_never_show_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_SERPAPI_API_KEYS", "serp-Zq81,serp-Zq82")
    settings = Settings(openai_api_key="sk-Zq83")
    assert settings.provider_key("GOOGLE") == "serp-Zq81" and settings.provider_key("CHATGPT") == "sk-Zq83"
    assert "Zq8" not in repr(settings) and "Zq8" not in str(settings.model_dump())


@pytest.mark.parametrize("value", ["[sk-Zq84", '["sk-Zq84", 7]', '["sk-Zq84", null]'])
def test_a_malformed_key_list_is_refused_naming_the_variable_and_echoing_no_key(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKQ_OPENAI_API_KEY", "sk-Zq85")
    monkeypatch.setenv("TASKQ_OPENAI_API_KEYS", value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "TASKQ_OPENAI_API_KEYS" in str(info.value)
    assert "Zq8" not in str(info.value)


def test_a_bad_setting_elsewhere_does_not_echo_the_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_SERPAPI_API_KEY", "serp-Zq86")
    with pytest.raises(ValidationError) as info:
        Settings(max_attempts="many", openai_api_key="sk-Zq87")
    assert "max_attempts" in str(info.value)
    assert "Zq8" not in str(info.value)
