"""The schedule loop: every drain fires due schedules; idle, they all wait on one shared thing.

Between firings a loop costs Redis nothing: it sleeps until the earliest fire time in the shards'
``T:scheds`` (read in one round trip per wake-up), or until a schedule is created or changed (a message
on ``keys.SCHEDULES_CHANGED``, pushed to its pub/sub connection). The firing itself (claim, admission,
record: ``taskq.schedules``) runs on a thread with a synchronous client, through the same admission
code as the intake. With a Redis Cluster client the loop looks again every CLUSTER_POLL_SECONDS instead
of listening for changes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio.cluster import RedisCluster

from taskq import keys, schedules
from taskq.connection import connect
from taskq.redistypes import AsyncPubSub, AsyncRedis
from taskq.settings import Settings
from taskq.store import Store, now_ms
from taskq.worker.loops import first_done, pause, reraise_cancellation

log = logging.getLogger("taskq.worker")

CLUSTER_POLL_SECONDS = 1.0
ERROR_PAUSE_SECONDS = 1.0
#: How long a loop that is stopped waits for a firing under way (one firing: a few Redis calls).
FIRING_WAIT_SECONDS = 10.0


async def run_schedules(client: AsyncRedis, settings: Settings, stop: asyncio.Event) -> None:
    """Fire due schedules until stop is set. ``client`` is the drain's redis.asyncio client."""
    cluster = isinstance(client, RedisCluster)
    store = Store(connect(settings.redis_url or "redis://127.0.0.1:6379/0", cluster=cluster), settings.shards)
    changes = None if cluster else client.pubsub()
    firing: asyncio.Future[Any] | None = None
    try:
        if changes is not None:
            await changes.subscribe(keys.SCHEDULES_CHANGED)
        while not stop.is_set():
            reraise_cancellation()
            try:
                # Shielded: cancelled meanwhile, the loop waits below for the firing to end (its thread
                # cannot be stopped) before it closes the client the firing uses.
                firing = asyncio.ensure_future(asyncio.to_thread(schedules.fire_due, store, settings))
                runs, wake = await asyncio.shield(firing)
            except Exception:
                reraise_cancellation()
                log.exception("firing schedules failed; retrying shortly")
                await pause(ERROR_PAUSE_SECONDS)
                continue
            for run in runs:
                log.info(
                    "schedule fired: %s admitted, %s refused",
                    run["admitted"],
                    run["refused"],
                    extra={"batch_id": run["batchId"]},
                )
            wait = None if wake is None else max(0.0, (wake - now_ms()) / 1000)
            if changes is None:
                wait = CLUSTER_POLL_SECONDS if wait is None else min(wait, CLUSTER_POLL_SECONDS)
            if wait == 0:
                continue
            await first_done(_changed(changes, wait), stop.wait())
    finally:
        if firing is not None and not firing.done():
            await asyncio.wait([firing], timeout=FIRING_WAIT_SECONDS)
        if changes is not None:
            try:
                await changes.aclose()
            except Exception:  # the connection is gone anyway
                log.debug("closing the schedule subscription failed", exc_info=True)
        store.client.close()


async def _changed(changes: AsyncPubSub | None, wait: float | None) -> None:
    """Return after `wait` seconds (None: no limit), or as soon as a schedule changes. The subscription's
    own confirmation counts as a change: it arrives again after a reconnect, when changes may have been
    missed."""
    if changes is None:
        await asyncio.sleep(wait or 0)
        return
    try:
        await changes.get_message(timeout=wait)
    except Exception:  # the connection broke: redis-py reconnects (and resubscribes) at the next read
        reraise_cancellation()
        await pause(ERROR_PAUSE_SECONDS)
