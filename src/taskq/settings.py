"""Settings: one typed object read from TASKQ_* variables, built at the entry points and passed down."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from taskq.providers import SPECS, UPSTREAMS

#: Credits per task type, the base async price (cloro-api.md §9), from the provider specs.
DEFAULT_PRICES: dict[str, int] = {task_type: spec.price for task_type, spec in SPECS.items()}


def env_name(setting: str) -> str:
    """The environment variable of a settings field: openai_api_key -> TASKQ_OPENAI_API_KEY."""
    return f"TASKQ_{setting.upper()}"


class UpstreamSettings(BaseModel):
    """The settings of one upstream API, from TASKQ_<NAME>_API_KEY(S), _BASE_URL and _MODEL."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    api_keys: tuple[SecretStr, ...] = ()  # _API_KEY first, then _API_KEYS; taskq calls with the first
    base_url: str
    model: str = ""


class _UpstreamEnv(PydanticBaseSettingsSource):
    """Reads the settings every upstream of the registry declares (names in Upstream.settings)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the environment as a whole

    def __call__(self) -> dict[str, Any]:
        wanted = {env_name(name): name for upstream in UPSTREAMS.values() for name in upstream.settings}
        return {wanted[k.upper()]: v for k, v in os.environ.items() if k.upper() in wanted}


def _key_list(setting: str, value: Any) -> list[Any]:
    """A key list from a JSON list or a comma-separated string (TASKQ_OPENAI_API_KEYS=sk-1,sk-2)."""
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("["):
            return [k.strip() for k in text.split(",")]
        try:
            value = json.loads(text)
        except ValueError:
            value = None
    if not isinstance(value, list | tuple) or not all(isinstance(k, str | SecretStr) for k in value):
        raise ValueError(f"{env_name(setting)} must be a JSON list of strings or comma-separated keys")
    return list(value)


def _upstream_settings(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pop the flat per-upstream values (openai_api_key, ...) out of data into one dict per upstream."""
    upstreams: dict[str, dict[str, Any]] = {}
    for name, upstream in UPSTREAMS.items():
        pool = data.pop(f"{name}_api_keys", None)
        keys = [data.pop(f"{name}_api_key", None), *(_key_list(f"{name}_api_keys", pool) if pool else [])]
        plain = [k.get_secret_value() if isinstance(k, SecretStr) else k for k in keys]
        upstreams[name] = {
            "api_keys": list(dict.fromkeys(k for k in plain if k)),  # empty means unset
            "base_url": data.pop(f"{name}_base_url", upstream.base_url),
            "model": data.pop(f"{name}_model", upstream.model or ""),
        }
    return upstreams


class RateLimit(BaseModel):
    """A provider's limits, per API key: ``rps`` calls per second, ``burst`` calls at once, and ``tpm``
    tokens per minute (charged with the tokens each call's response says it used).

    Written as a bare number (requests per second) or an object with ``rps`` or ``rpm``, an optional
    ``burst`` (default 1) and an optional ``tpm``; at least one of rps, rpm and tpm.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rps: float = Field(default=0.0, ge=0)  # 0: no request rate configured (tpm only)
    burst: int = Field(default=1, ge=1)
    tpm: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _shapes(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not value > 0:
                raise ValueError("a rate must be a positive number")
            return {"rps": value}
        if isinstance(value, dict) and "rpm" in value:
            if "rps" in value:
                raise ValueError("give rps or rpm, not both")
            rpm = value["rpm"]
            if not isinstance(rpm, int | float) or isinstance(rpm, bool) or rpm <= 0:
                raise ValueError("rpm must be a positive number")
            return {**{k: v for k, v in value.items() if k != "rpm"}, "rps": rpm / 60}
        if isinstance(value, dict) and not value.get("rps") and value.get("tpm") is None:
            raise ValueError("give rps, rpm or tpm")
        return value


class Settings(BaseSettings):
    """Every knob taskq has. Environment: TASKQ_<FIELD> (REDIS_URL is accepted for redis_url)."""

    # Errors never echo their input: it holds the provider keys.
    model_config = SettingsConfigDict(
        env_prefix="TASKQ_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    # Redis
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("TASKQ_REDIS_URL", "REDIS_URL", "redis_url")
    )
    redis_cluster: bool = False
    shards: int = Field(default=1, ge=1, le=1024)
    # RQ's supervision data (worker registry, drain jobs): a plain Redis, since RQ's multi-key commands
    # do not run on a cluster. Default: redis_url, unless that is a cluster (then this is required).
    rq_redis_url: str | None = None
    embedded_redis_port: int = 6390
    # Durable acknowledgements (taskq.durability): none | local (the server's AOF fsynced) | replica
    # (also held by durability_replicas replicas). Needs WAITAOF: Redis or Valkey >= 7.2.
    durability: Literal["none", "local", "replica"] = "none"
    durability_replicas: int = Field(default=1, ge=1)
    durability_timeout_ms: int = Field(default=1000, ge=1)
    data_dir: str = ".taskq"
    # Without redis_url: the local Redis taskq may use if it is empty or already holds taskq's data.
    local_redis_url: str = "redis://127.0.0.1:6379/0"
    # The card of the running `taskq up` (default: data_dir/stack.json here or in a parent directory).
    stack_file: str | None = None

    # Intake
    intake_threads: int = (
        16  # `taskq serve` threads per process for the requests Flask serves (not monitor calls)
    )
    max_body_bytes: int = 16 * 1024 * 1024
    body_read_timeout_seconds: float = 15.0
    max_batch_size: int = 500
    rate_limit_per_second: int = 1000
    default_credits: int = 0
    default_concurrency: int = 100
    default_queue_limit: int = 100_000
    prices: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    admin_token: SecretStr | None = None
    sync_surcharge: int = 2  # credits a synchronous monitor call costs over the async price (§9)
    sync_timeout_seconds: float = 300.0  # a synchronous call starts no attempt after this, then 500

    # Scheduler and worker
    lease_seconds: float = 30.0
    reaper_interval_seconds: float = 5.0
    max_attempts: int = 5
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    claim_batch: int = 32
    worker_concurrency: int = 200
    worker_processes: int = 1
    drain_seconds: float = 600.0
    shutdown_grace_seconds: float = 25.0
    provider_caps: dict[str, int] = Field(default_factory=dict)
    # Flow control (taskq.flow): rates per task type and key, 429 pacing, quota probes
    flow_control: bool = True  # off: 429s and quota errors are retried and failed as any other error
    provider_rates: dict[str, RateLimit] = Field(default_factory=dict)  # per key of the task type
    rate_limit_give_up_seconds: float = Field(default=3600.0, gt=0)
    quota_probe_seconds: float = Field(default=300.0, gt=0)
    rate_slow_start: bool = True  # no rate known: start a lane at 10 calls/s and double every 0.1 s
    retention_seconds: int = 24 * 3600
    worker_http_transport: str = "aiohttp"  # or "httpx": its own pool (slower at high concurrency)
    worker_idle_wait_seconds: float = 1.0  # BLPOP timeout on the wake list (waiting tasks wake it when due)
    worker_redis_connections: int = 32
    worker_deliver_webhooks: bool = True  # each drain also runs the webhook delivery loop
    worker_run_schedules: bool = True  # each drain also fires recurring schedules (once each, whoever wins)
    batch_ttl_seconds: int = 7 * 24 * 3600

    # Providers (TASKQ_<UPSTREAM>_API_KEY, _API_KEYS, _BASE_URL, _MODEL come from the provider registry)
    upstream_base_url: str | None = None
    # Seconds per upstream call: each spec has its own; these override it for all, or per task type.
    provider_timeout_seconds: float | None = Field(default=None, gt=0)
    provider_timeouts: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    upstreams: dict[str, UpstreamSettings] = Field(default_factory=dict)
    google_base_url: str = "https://www.google.com"  # where the goto resolver sends redirect links
    goto_timeout_seconds: float = 10.0

    # Webhooks
    webhook_timeout_seconds: float = 15.0
    webhook_resolve_timeout_seconds: float = 2.0
    webhook_schedule_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0, 36000.0]
    )
    webhook_allow_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_require_https: bool = False
    webhook_secret_overlap_seconds: int = 24 * 3600
    webhook_concurrency: int = 500
    webhook_max_per_host: int | None = None  # sends in flight to one receiver; default a quarter
    webhook_claim_batch: int = 32
    webhook_lease_seconds: float = 60.0  # a claimed delivery is resent if unrecorded this long

    # Logging
    log_format: str = "text"
    log_level: str = "INFO"

    @field_validator("webhook_allow_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        """Accept a JSON list or a comma-separated string (TASKQ_WEBHOOK_ALLOW_NETWORKS=127.0.0.0/8)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("provider_timeouts", "provider_rates")
    @classmethod
    def _known_task_types(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(SPECS))
        if unknown:
            raise ValueError(f"unknown task type {', '.join(unknown)}; expected one of {', '.join(SPECS)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _gather_upstreams(cls, data: Any) -> Any:
        """Fold the flat provider settings (openai_api_key=..., or from the environment) into upstreams."""
        if isinstance(data, dict):
            data = dict(data)
            data["upstreams"] = _upstream_settings(data) | dict(data.get("upstreams") or {})
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _UpstreamEnv(settings_cls), dotenv_settings, file_secret_settings

    def upstream(self, task_type: str) -> UpstreamSettings:
        """The settings of the upstream a task type calls."""
        return self.upstreams[SPECS[task_type].upstream.name]

    def provider_keys(self, task_type: str) -> tuple[str, ...]:
        """Every key configured for a task type's upstream, in order; ('',) when it needs none."""
        if not SPECS[task_type].upstream.keyed:
            return ("",)
        return tuple(key.get_secret_value() for key in self.upstream(task_type).api_keys)

    def provider_key(self, task_type: str) -> str | None:
        """The key calls use (the first configured), '' when it needs none, None when missing."""
        keys = self.provider_keys(task_type)
        return keys[0] if keys else None

    def provider_rate(self, task_type: str) -> RateLimit | None:
        """The configured rate per key of a task type: TASKQ_PROVIDER_RATES, else its spec's default."""
        if task_type in self.provider_rates:
            return self.provider_rates[task_type]
        default = SPECS[task_type].limits.requests_per_second
        return RateLimit(rps=default) if default else None

    def provider_timeout(self, task_type: str) -> float:
        """Seconds an upstream call of this task type may take."""
        if task_type in self.provider_timeouts:
            return self.provider_timeouts[task_type]
        if self.provider_timeout_seconds is not None:
            return self.provider_timeout_seconds
        return SPECS[task_type].timeout

    def longest_provider_timeout(self) -> float:
        """The longest any upstream call may take: how long in-flight work may need to finish."""
        return max(self.provider_timeout(task_type) for task_type in SPECS)

    def price(self, task_type: str) -> int:
        return self.prices.get(task_type, DEFAULT_PRICES[task_type])


def key_setting(task_type: str) -> str | None:
    """The environment variable that enables a task type (None: it needs no key)."""
    upstream = SPECS[task_type].upstream
    return env_name(f"{upstream.name}_api_key") if upstream.keyed else None


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment (entry points only)."""
    return Settings(**overrides)
