"""The worker's shared clients, one of each per process: Redis (asyncio), scheduler ops, provider HTTP."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
import redis.asyncio as aioredis
from httpx_aiohttp import AiohttpTransport
from redis.asyncio.cluster import RedisCluster

from taskq.connection import is_cluster_url
from taskq.scheduler import Op
from taskq.scripts import Scripts
from taskq.settings import Settings

R = TypeVar("R")


def redis_client(settings: Settings) -> Any:
    """A decoded-responses asyncio client; a bounded pool, since hundreds of acks can land at once."""
    url = settings.redis_url or "redis://127.0.0.1:6379/0"
    if settings.redis_cluster or is_cluster_url(url):
        return RedisCluster.from_url(url.replace("+cluster", "", 1), decode_responses=True)
    pool: Any = aioredis.BlockingConnectionPool.from_url(
        url, decode_responses=True, max_connections=settings.worker_redis_connections, timeout=None
    )
    return aioredis.Redis(connection_pool=pool)


def http_client(connections: int, transport: str = "aiohttp") -> httpx.AsyncClient:
    """httpx API for the adapters; aiohttp's pool underneath (httpx's own costs ~20x more CPU per call)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    if transport == "httpx":
        return httpx.AsyncClient(limits=limits)
    return httpx.AsyncClient(transport=AiohttpTransport(limits=limits), limits=limits)


class AsyncScheduler:
    """Runs taskq.scheduler ops on the asyncio client (the same ops the sync Scheduler runs)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.scripts = Scripts(client)

    async def run(self, op: Op[R]) -> R:
        return op.parse(await self.scripts[op.script](keys=op.keys, args=op.args))
