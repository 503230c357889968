"""Redis connections: pick the configured server, a local one, or start the embedded one."""

from __future__ import annotations

import os
import sys
from typing import Any

import redis
from redis.cluster import RedisCluster

from taskq.embedded import EmbeddedServer, answers
from taskq.settings import Settings

LOCAL_URL = "redis://127.0.0.1:6379/0"


def is_cluster_url(url: str) -> bool:
    return url.startswith(("redis+cluster://", "rediss+cluster://"))


def resolve_url(settings: Settings) -> tuple[str, EmbeddedServer | None]:
    """The Redis URL to use, starting the embedded server when none is configured or answering locally."""
    if settings.redis_url:
        return settings.redis_url, None
    if answers(LOCAL_URL):
        return LOCAL_URL, None
    server = EmbeddedServer(settings.embedded_redis_port, os.path.join(settings.data_dir, "redis"))
    if answers(server.url):
        print(f"taskq: using the embedded Redis already running at {server.url}", file=sys.stderr)
        return server.url, None
    return server.start().url, server


def connect(url: str, *, cluster: bool = False, **kwargs: Any) -> Any:
    """A decoded-responses client for url; a cluster client for redis+cluster:// URLs or cluster=True."""
    options: dict[str, Any] = {"decode_responses": True, "health_check_interval": 30}
    options.update(kwargs)
    if cluster or is_cluster_url(url):
        plain = url.replace("+cluster", "", 1)
        options.pop("health_check_interval", None)
        return RedisCluster.from_url(plain, **options)
    return redis.Redis.from_url(url, **options)
