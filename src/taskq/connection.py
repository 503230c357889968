"""Redis connections: pick the configured server, a local one, or start the embedded one; turn URLs
(plain, ``redis+cluster://``, ``redis+sentinel://``) into clients."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from taskq.embedded import EmbeddedServer, answers
from taskq.settings import Settings

LOCAL_URL = "redis://127.0.0.1:6379/0"
SENTINEL_PORT = 26379
#: How long a question to one sentinel may take before the next one is asked.
SENTINEL_TIMEOUT_SECONDS = 1.0


def is_cluster_url(url: str) -> bool:
    return url.startswith(("redis+cluster://", "rediss+cluster://"))


def is_sentinel_url(url: str) -> bool:
    return url.startswith(("redis+sentinel://", "rediss+sentinel://"))


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``: the sentinels to
    ask, the name of the monitored primary, its database; ``rediss+sentinel`` for TLS to the primary."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        scheme, _, rest = url.partition("://")
        userinfo, _, rest = rest.rpartition("@")
        hosts, _, path = rest.partition("/")
        parts = [p for p in path.split("?", 1)[0].split("/") if p]
        if not hosts or not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise ValueError(
                f"not a sentinel URL: {url!r}; expected redis+sentinel://host:26379[,host2:26379]/service[/db]"
            )
        sentinels = []
        for host in hosts.split(","):
            name, sep, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
            if not sep:
                name, port = host, str(SENTINEL_PORT)
            if not port.isdigit() or not name:
                raise ValueError(f"bad sentinel address {host!r} in {url!r}")
            sentinels.append((name.strip("[]"), int(port)))
        username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
        return cls(
            sentinels,
            unquote(parts[0]),
            int(parts[1]) if len(parts) == 2 else 0,
            unquote(username) or None,
            unquote(password) or None,
            scheme == "rediss+sentinel",
        )

    def primary_options(self) -> dict[str, Any]:
        """Connection options for the primary (what ``master_for`` passes to each connection)."""
        options: dict[str, Any] = {"db": self.db, "username": self.username, "password": self.password}
        if self.ssl:
            options["ssl"] = True
        return options

    def sentinel_options(self) -> dict[str, Any]:
        timeout = SENTINEL_TIMEOUT_SECONDS
        return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


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
    """A decoded-responses client for url: a cluster client for redis+cluster:// URLs or cluster=True;
    for redis+sentinel:// URLs a client of the current primary, which asks the sentinels again after
    a failover (its broken connections raise ConnectionError, the next command reconnects)."""
    options: dict[str, Any] = {"decode_responses": True, "health_check_interval": 30}
    options.update(kwargs)
    if is_sentinel_url(url):
        parsed = SentinelURL.parse(url)
        sentinel = Sentinel(parsed.sentinels, sentinel_kwargs=parsed.sentinel_options())  # type: ignore[no-untyped-call]
        return sentinel.master_for(parsed.service, **parsed.primary_options(), **options)  # type: ignore[no-untyped-call]
    if cluster or is_cluster_url(url):
        plain = url.replace("+cluster", "", 1)
        options.pop("health_check_interval", None)
        return RedisCluster.from_url(plain, **options)
    return redis.Redis.from_url(url, **options)
