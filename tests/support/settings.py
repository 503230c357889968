"""The one builder of Settings for the tests: nothing read from the environment, every provider
configured, then the named profiles in order, then the overrides."""

from __future__ import annotations

from typing import Any

from taskq.settings import Settings
from tests.support.env import ALL_KEYS, REAL_REDIS_URL

#: Webhook retry delays of the "webhooks" profile (seconds).
WEBHOOK_SCHEDULE = [0.05, 0.1, 0.2]

PROFILES: dict[str, dict[str, Any]] = {
    # A drain in the test process against the shared real Redis: short waits and retries, a quick
    # graceful stop, no webhook deliveries.
    "drain": {
        "redis_url": REAL_REDIS_URL, "worker_idle_wait_seconds": 0.1, "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2, "shutdown_grace_seconds": 0.5, "worker_deliver_webhooks": False,
    },
    # The drain tests against the stub upstream: leases and the reaper in seconds, three attempts.
    "worker": {"lease_seconds": 3.0, "reaper_interval_seconds": 0.5, "max_attempts": 3},
    # Webhook deliveries to receivers on 127.0.0.0/8 over http, on a fast schedule.
    "webhooks": {
        "webhook_allow_networks": ["127.0.0.0/8"], "webhook_require_https": False,
        "webhook_schedule_seconds": WEBHOOK_SCHEDULE, "webhook_timeout_seconds": 2.0,
        "webhook_concurrency": 50, "reaper_interval_seconds": 0.05, "shutdown_grace_seconds": 1.0,
        "retention_seconds": 3600,
    },
    # Flow control without the slow start, so a rate holds from the first call.
    "flow": {"rate_slow_start": False},
}  # fmt: skip
PROFILES["worker"] = {**PROFILES["drain"], **PROFILES["worker"]}


def make_settings(*profiles: str, upstream: str | None = None, **overrides: Any) -> Settings:
    """Settings for tests: `make_settings("worker", upstream=stub.url, max_attempts=2)`."""
    values: dict[str, Any] = {"upstream_base_url": upstream or "http://127.0.0.1:9", **ALL_KEYS}
    for name in profiles:
        values.update(PROFILES[name])
    values.update(overrides)
    return Settings(**values)
