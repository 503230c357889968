"""Script ops on an asyncio Redis client: ``AsyncScheduler`` runs taskq.scheduler ops, alone or batched.

The ops (``taskq.scripts.Op``) are the same; this runner adds what the worker's hot path needs: ops
submitted while a round trip is under way leave together in the next pipeline.
"""

from __future__ import annotations

import asyncio
import hashlib
from functools import cache
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from taskq.redistypes import AsyncRedis
from taskq.scripts import Op, Scripts, merge_shared, source

R = TypeVar("R")

#: Most ops one pipelined round trip carries (each is still its own script call).
BATCH_LIMIT = 128

#: A lingering round trip (``run_batched(linger=...)``) leaves early once this many ops wait.
BATCH_GATHER = 16


@cache
def _sha(script: str) -> str:
    """The SHA1 the server knows a script by (what redis-py's Script computes)."""
    return hashlib.sha1(source(script).encode("utf-8")).hexdigest()


class AsyncScheduler:
    """Runs taskq.scheduler ops on the asyncio client.

    ``run`` sends one op in its own round trip. ``run_batched`` is for the hot path (a task's outcome:
    ack, fail, retry): ops submitted while a round trip is under way wait for the next one and then go
    out together in one pipeline. Every op is still its own EVALSHA, so each task's transition stays
    atomic and fenced on its own; only the network trip (and the client's per-command work) is shared.
    Nothing waits for a batch to fill unless asked: an op submitted to an idle scheduler leaves at
    once, or, with ``linger``, once BATCH_GATHER ops wait, an op without linger comes, or the linger
    is up (ops that share a script call, such as acks, then cost Redis one call for many).
    """

    def __init__(self, client: AsyncRedis) -> None:
        self.client = client
        self.scripts = Scripts(client)
        self._cluster = isinstance(client, RedisCluster)
        self._queued: list[tuple[Op[Any], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._lingering: asyncio.Future[None] | None = None  # resolved when the lingering trip leaves

    async def run(self, op: Op[R]) -> R:
        return op.parse(await self.scripts[op.script](keys=op.keys, args=op.args))

    async def run_many(self, ops: list[Op[R]]) -> list[R]:
        """Several ops in one round trip (each its own script call, in order); raises the first error."""
        replies = await self._replies(list(ops))
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return [op.parse(reply) for op, reply in zip(ops, replies, strict=True)]

    async def run_batched(self, op: Op[R], *, linger: float = 0.0) -> R:
        """Like ``run``, sharing a round trip with the other ops submitted meanwhile; with ``linger``
        (seconds), a round trip this op starts waits up to that long for others to join."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.append((op, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued(linger))
        elif self._lingering is not None and (linger <= 0 or len(self._queued) >= BATCH_GATHER):
            _resolve(self._lingering)
        return await done

    async def _linger(self, seconds: float) -> None:
        """Wait up to `seconds` before a round trip leaves (see ``run_batched``)."""
        if seconds <= 0 or len(self._queued) >= BATCH_GATHER:
            return
        loop = asyncio.get_running_loop()
        self._lingering = loop.create_future()
        timer = loop.call_later(seconds, _resolve, self._lingering)
        try:
            await self._lingering
        except BaseException:  # cancelled (loop shutting down): so are the callers waiting
            for _, done in self._queued:
                done.cancel()
            self._queued = []
            raise
        finally:
            timer.cancel()
            self._lingering = None

    async def _send_queued(self, linger: float = 0.0) -> None:
        await self._linger(linger)
        while self._queued:
            batch, self._queued = self._queued[:BATCH_LIMIT], self._queued[BATCH_LIMIT:]
            batch = [entry for entry in batch if not entry[1].done()]  # callers cancelled before it left
            if not batch:
                continue
            try:
                replies = await self._replies([op for op, _ in batch])
            except Exception as exc:  # Redis unreachable or similar: every caller hears of it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            except BaseException:  # cancelled (loop shutting down): so are the callers still waiting
                for _, done in [*batch, *self._queued]:
                    done.cancel()
                self._queued = []
                raise
            for (op, done), reply in zip(batch, replies, strict=True):
                if done.done():  # its caller was cancelled; the transition itself happened (or not)
                    continue
                if isinstance(reply, BaseException):
                    done.set_exception(reply)
                    continue
                try:
                    done.set_result(op.parse(reply))
                except Exception as exc:
                    done.set_exception(exc)

    async def _replies(self, ops: list[Op[Any]]) -> list[Any]:
        """Raw replies (or per-op errors) of these ops, in order. Ops that can share a script call
        (``Op.shared``) go out as one call; each gets its own entry of the reply, as ``[entry]``."""
        calls, members = merge_shared(ops)
        if len(calls) == len(ops):
            return await self._call_replies(ops)
        replies: list[Any] = [None] * len(ops)
        for call, indexes, reply in zip(calls, members, await self._call_replies(calls), strict=True):
            for position, index in enumerate(indexes):
                failed = isinstance(reply, BaseException)
                replies[index] = reply if failed or not call.shared else [reply[position]]
        return replies

    async def _call_replies(self, ops: list[Op[Any]]) -> list[Any]:
        if self._cluster or len(ops) == 1:
            # A cluster spreads shards over nodes: plain concurrent calls, as before batching.
            calls = [self.scripts[op.script](keys=op.keys, args=op.args) for op in ops]
            return list(await asyncio.gather(*calls, return_exceptions=True))
        pipe = self.client.pipeline(transaction=False)
        for op in ops:
            pipe.evalsha(_sha(op.script), len(op.keys), *op.keys, *op.args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):  # the server lost its scripts: this op did not run
                op = ops[i]
                try:
                    replies[i] = await self.scripts[op.script](keys=op.keys, args=op.args)
                except Exception as exc:
                    replies[i] = exc
        return replies


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
