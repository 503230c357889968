"""Settings: one typed object read from TASKQ_* variables, built at the entry points and passed down."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from taskq.schemas.tasks import TaskType

#: Credits per task type, the base async price (cloro-api.md §9).
DEFAULT_PRICES: dict[str, int] = {
    "CHATGPT": 5,
    "PERPLEXITY": 4,
    "COPILOT": 5,
    "GEMINI": 4,
    "AIMODE": 4,
    "GROK": 4,
    "GOOGLE": 3,
    "GOOGLE_NEWS": 3,
}

#: Which setting holds the key that enables each task type (None: needs no key).
PROVIDER_KEY_SETTING: dict[TaskType, str | None] = {
    TaskType.CHATGPT: "openai_api_key",
    TaskType.GEMINI: "gemini_api_key",
    TaskType.PERPLEXITY: "perplexity_api_key",
    TaskType.GROK: "xai_api_key",
    TaskType.GOOGLE: "serpapi_api_key",
    TaskType.AIMODE: "serpapi_api_key",
    TaskType.COPILOT: "serpapi_api_key",
    TaskType.GOOGLE_NEWS: None,
}


class Settings(BaseSettings):
    """Every knob taskq has. Environment: TASKQ_<FIELD> (REDIS_URL is accepted for redis_url)."""

    model_config = SettingsConfigDict(env_prefix="TASKQ_", extra="ignore", populate_by_name=True)

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
    data_dir: str = ".taskq"

    # Intake
    max_body_bytes: int = 16 * 1024 * 1024
    body_read_timeout_seconds: float = 15.0
    max_batch_size: int = 500
    rate_limit_per_second: int = 1000
    default_credits: int = 0
    default_concurrency: int = 100
    default_queue_limit: int = 100_000
    prices: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    admin_token: SecretStr | None = None

    # Scheduler and worker
    lease_seconds: float = 30.0
    reaper_interval_seconds: float = 5.0
    max_attempts: int = 5
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    claim_batch: int = 16
    worker_concurrency: int = 200
    worker_processes: int = 1
    drain_seconds: float = 600.0
    shutdown_grace_seconds: float = 25.0
    provider_caps: dict[str, int] = Field(default_factory=dict)
    retention_seconds: int = 24 * 3600
    worker_http_transport: str = "aiohttp"  # or "httpx": its own pool (slower at high concurrency)
    worker_idle_wait_seconds: float = 1.0  # BLPOP timeout on the wake list; also how often retries are due
    worker_redis_connections: int = 32
    worker_deliver_webhooks: bool = True  # each drain also runs the webhook delivery loop
    batch_ttl_seconds: int = 7 * 24 * 3600

    # Providers
    upstream_base_url: str | None = None
    provider_timeout_seconds: float = 120.0
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com"
    openai_model: str = "gpt-5-mini"
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    gemini_model: str = "gemini-2.5-flash"
    perplexity_api_key: SecretStr | None = None
    perplexity_base_url: str = "https://api.perplexity.ai"
    perplexity_model: str = "sonar"
    xai_api_key: SecretStr | None = None
    xai_base_url: str = "https://api.x.ai"
    xai_model: str = "grok-4-fast-non-reasoning"
    serpapi_api_key: SecretStr | None = None
    serpapi_base_url: str = "https://serpapi.com"
    google_news_base_url: str = "https://news.google.com"

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

    def provider_key(self, task_type: TaskType) -> str | None:
        """Return the configured key for a task type, '' when it needs none, None when missing."""
        field = PROVIDER_KEY_SETTING[task_type]
        if field is None:
            return ""
        secret: SecretStr | None = getattr(self, field)
        if secret is None or not secret.get_secret_value():
            return None
        return secret.get_secret_value()

    def price(self, task_type: str) -> int:
        return self.prices.get(task_type, DEFAULT_PRICES[task_type])


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment (entry points only)."""
    return Settings(**overrides)
