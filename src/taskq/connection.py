"""Redis connections: pick the configured server, a local one, or start the embedded one; turn URLs
(plain, ``redis+cluster://``, ``redis+sentinel://``) into clients."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from taskq import keys
from taskq.embedded import EmbeddedServer, answers
from taskq.redistypes import AsyncRedis, Redis
from taskq.settings import Settings

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
        bad_db = len(parts) == 2 and not (parts[1].isascii() and parts[1].isdigit())
        if not hosts or not parts or len(parts) > 2 or bad_db:
            raise ValueError(
                f"not a sentinel URL: {url!r}; expected redis+sentinel://host:26379[,host2:26379]/service[/db]"
            )
        sentinels = []
        for host in hosts.split(","):
            name, sep, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
            if not sep:
                name, port = host, str(SENTINEL_PORT)
            if not (port.isascii() and port.isdigit()) or not name:
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
    """The Redis URL to use when none is configured: the local Redis (TASKQ_LOCAL_REDIS_URL, 6379) only
    if it is empty or already holds taskq's data, else the embedded server (started if need be)."""
    if settings.redis_url:
        return settings.redis_url, None
    local = settings.local_redis_url
    if answers(local):
        found = foreign_data(local)
        if found is None:
            return local, None
        print(
            f"taskq: the Redis at {local} holds {found}; taskq does not write beside another "
            f"application's data, so it uses its embedded Redis. To use that Redis anyway, set "
            f"TASKQ_REDIS_URL (e.g. {local} or another database of it).",
            file=sys.stderr,
        )
    server = EmbeddedServer(settings.embedded_redis_port, os.path.join(settings.data_dir, "redis"))
    if answers(server.url):
        print(f"taskq: using the embedded Redis already running at {server.url}", file=sys.stderr)
        return server.url, None
    return server.start().url, server


def foreign_data(url: str) -> str | None:
    """None when taskq may use the Redis at url: it holds no keys at all, or taskq's own (its registry
    of organizations in url's database); else what it holds, for the operator (key names sampled)."""
    client = redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)
    try:
        spaces = {name: int(info["keys"]) for name, info in client.info("keyspace").items()}
        if not any(spaces.values()) or client.exists(keys.ORGS):
            return None
        db = f"db{client.connection_pool.connection_kwargs.get('db', 0)}"
        sample = list(client.scan(0, count=100)[1][:3]) if spaces.get(db) else []
    except redis.RedisError as exc:
        return f"an answer taskq cannot read ({exc})"
    finally:
        client.close()
    held = ", ".join(f"{count} keys in {name}" for name, count in sorted(spaces.items()) if count)
    example = f" (e.g. {', '.join(repr(k) for k in sample)})" if sample else ""
    return f"{held}{example}, none of them taskq's"


class ThreadedPool(redis.ConnectionPool):
    """redis-py's connection pool without its lock, events and connection-count metrics on the way
    in and out, for a process of hundreds of threads (the intake).

    Each command takes a connection and gives it back under the pool's lock; under a burst hundreds
    of threads queue on that lock while its holder waits for the GIL (a lock convoy: measured, 190 of
    the intake's 512 threads at once in ``get_connection``/``release``). Idle connections here are a
    list and in-use ones a set, whose append/pop and add/remove are atomic under the GIL: only
    counting a new connection takes the lock. Nothing taskq uses listens to the pool's events.

    A connection taken from the pool is not polled for unread data first (a system call per
    command, 8% of the intake's CPU per synchronous call): every path that can leave a reply unread
    disconnects the connection instead (redis-py on any error, ``Scripts.start`` on any exception),
    and an idle connection is still pinged after ``health_check_interval``."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self._checkpid()
        try:
            connection = self._available_connections.pop()
        except IndexError:
            connection = self._new_connection()
        self._in_use_connections.add(connection)
        try:
            connection.connect()  # once; then only the health check's PING after an idle interval
        except BaseException:
            self.release(connection)
            raise
        return connection

    def _new_connection(self) -> Any:
        """A new connection, counted against max_connections under the lock but built outside it
        (a burst's first commands create hundreds at once)."""
        with self._lock:
            if self._created_connections >= self.max_connections:
                raise redis.exceptions.MaxConnectionsError("Too many connections")
            self._created_connections += 1
        try:
            return self.connection_class(**self.connection_kwargs)
        except BaseException:
            with self._lock:
                self._created_connections -= 1
            raise

    def release(self, connection: Any) -> None:
        self._checkpid()
        try:
            self._in_use_connections.remove(connection)
        except KeyError:
            return  # not ours
        if self.owns_connection(connection):
            if connection.should_reconnect():
                connection.disconnect()
            self._available_connections.append(connection)
            return
        connection.disconnect()  # inherited across a fork
        if connection.pid == self.pid:
            with self._lock:
                self._created_connections -= 1


def connect(url: str, *, cluster: bool = False, threaded: bool = False, **kwargs: Any) -> Redis:
    """A decoded-responses client for url: a cluster client for redis+cluster:// URLs or cluster=True;
    for redis+sentinel:// URLs a client of the current primary, which asks the sentinels again after
    a failover (its broken connections raise ConnectionError, the next command reconnects). threaded:
    a plain client's pool is a ThreadedPool (many threads share it)."""
    options: dict[str, Any] = {"decode_responses": True, "health_check_interval": 30}
    options.update(kwargs)
    if is_sentinel_url(url):
        parsed = SentinelURL.parse(url)
        sentinel = Sentinel(parsed.sentinels, sentinel_kwargs=parsed.sentinel_options())  # type: ignore[no-untyped-call,unused-ignore]
        return cast(Redis, sentinel.master_for(parsed.service, **parsed.primary_options(), **options))  # type: ignore[no-untyped-call,unused-ignore]
    if cluster or is_cluster_url(url):
        plain = url.replace("+cluster", "", 1)
        options.pop("health_check_interval", None)
        return cast(Redis, RedisCluster.from_url(plain, **options))
    if threaded:
        client = redis.Redis(connection_pool=ThreadedPool.from_url(url, **options))
        client.auto_close_connection_pool = True
        return cast(Redis, client)
    return cast(Redis, redis.Redis.from_url(url, **options))


def async_connect(url: str, *, cluster: bool = False, max_connections: int) -> AsyncRedis:
    """A decoded-responses asyncio client for url (cluster, sentinel or plain, as ``connect``) whose pool
    holds at most max_connections: a caller waits for a free one instead of failing, since hundreds of
    commands can land at once (a worker's acks, an intake's burst of calls)."""
    if cluster or is_cluster_url(url):
        # Per node; this client raises rather than waits when out of connections, and a drain may
        # have one command per call in flight. Connections open only as concurrency demands.
        nodes = AsyncRedisCluster.from_url(
            url.replace("+cluster", "", 1), decode_responses=True, max_connections=65536
        )
        return cast(AsyncRedis, nodes)
    if is_sentinel_url(url):
        parsed = SentinelURL.parse(url)
        sentinel = AsyncSentinel(parsed.sentinels, sentinel_kwargs=parsed.sentinel_options())  # type: ignore[no-untyped-call,unused-ignore]
        primary = sentinel.master_for(
            parsed.service,
            redis_class=aioredis.Redis,
            connection_pool_class=BlockingSentinelPool,
            decode_responses=True,
            max_connections=max_connections,
            timeout=None,
            **parsed.primary_options(),
        )
        return cast(AsyncRedis, primary)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, decode_responses=True, max_connections=max_connections, timeout=None
    )
    return cast(AsyncRedis, aioredis.Redis(connection_pool=pool))


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The primary's connections found through the sentinels, bounded like the plain pool: a caller
    waits for a free connection instead of failing."""
