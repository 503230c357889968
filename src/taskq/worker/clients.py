"""The worker's Redis client, one per process (asyncio, bounded pool), and the drain's GC tuning.

The script ops run on it through ``taskq.asyncops.AsyncScheduler``; loop helpers are in ``worker.loops``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from taskq.connection import SentinelURL, is_cluster_url, is_sentinel_url
from taskq.redistypes import AsyncRedis
from taskq.settings import Settings

#: Allocations between young-generation collections while a drain runs (CPython's default: 700).
DRAIN_GC_THRESHOLD = 5000


@contextmanager
def steady_gc() -> Iterator[None]:
    """Cheaper garbage collection while a drain runs; as it was afterwards.

    A drain with hundreds of calls in flight spent about a fifth of its CPU in the cyclic collector:
    full collections re-scanned every module and class loaded at startup (up to ~0.1 s each, stalling
    the loop), and the default young threshold (700) collected about every 10 ms. Objects alive now
    live as long as the process, so they are frozen out of collection; young collections run every
    DRAIN_GC_THRESHOLD allocations (older generations keep their ratios, so garbage is still freed).
    """
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(threshold[0], DRAIN_GC_THRESHOLD), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def redis_client(settings: Settings) -> AsyncRedis:
    """A decoded-responses asyncio client; a bounded pool, since hundreds of acks can land at once."""
    url = settings.redis_url or "redis://127.0.0.1:6379/0"
    if settings.redis_cluster or is_cluster_url(url):
        # Per node; this client raises rather than waits when out of connections, and a drain may
        # have one command per call in flight. Connections open only as concurrency demands.
        cluster = RedisCluster.from_url(
            url.replace("+cluster", "", 1), decode_responses=True, max_connections=65536
        )
        return cast(AsyncRedis, cluster)
    if is_sentinel_url(url):
        parsed = SentinelURL.parse(url)
        sentinel = Sentinel(parsed.sentinels, sentinel_kwargs=parsed.sentinel_options())  # type: ignore[no-untyped-call,unused-ignore]
        primary = sentinel.master_for(
            parsed.service,
            redis_class=aioredis.Redis,
            connection_pool_class=BlockingSentinelPool,
            decode_responses=True,
            max_connections=settings.worker_redis_connections,
            timeout=None,
            **parsed.primary_options(),
        )
        return cast(AsyncRedis, primary)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, decode_responses=True, max_connections=settings.worker_redis_connections, timeout=None
    )
    return cast(AsyncRedis, aioredis.Redis(connection_pool=pool))


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The primary's connections found through the sentinels, bounded like the plain pool: a caller
    waits for a free connection instead of failing (hundreds of acks can land at once)."""
