"""The worker's Redis client, one per process (asyncio, bounded pool), and the drain's GC tuning.

The script ops run on it through ``taskq.asyncops.AsyncScheduler``; loop helpers are in ``worker.loops``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from taskq.connection import async_connect
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
    return async_connect(
        url, cluster=settings.redis_cluster, max_connections=settings.worker_redis_connections
    )
