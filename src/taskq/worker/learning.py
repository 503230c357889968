"""What a drain's calls teach flow control (taskq.flow): the limits the responses' x-ratelimit-* headers
state, a pause when none remained, the tokens used against a tokens-per-minute limit.

A call's responses are read into an ``Observed`` as they arrive (providers/ratelimits.py); after the
call the ``Learner`` decides whether anything is worth a note (flow_note.lua), which shares the round
trip of the task's outcome. A call that taught nothing new costs no Redis command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from taskq.flow import Lane
from taskq.providers.ratelimits import Limit, Observed
from taskq.scheduler import Claimed, Note, note
from taskq.scripts import Op

log = logging.getLogger("taskq.worker")

#: Pauses shorter than this are left to the limiter's own pacing (a claim's granularity, flow.TICK_MS).
MIN_PAUSE_SECONDS = 0.05

#: A drain states a key's learned limits again this often even when unchanged (another drain, or an
#: operator's resume, may have changed them meanwhile).
RESTATE_SECONDS = 30.0


class Learner:
    """One drain's reading of what its calls' responses say about their keys (no I/O): ``note`` is what
    to send to flow_note.lua after a call, or None when nothing changed (no Redis call then)."""

    def __init__(self, by_type: Mapping[str, Lane], shards: int) -> None:
        self.lanes, self.shards = by_type, shards
        # (shard, type, key) -> the limits last stated to that shard's flow state, and when (monotonic)
        self._stated: dict[tuple[int, str, str], tuple[float | None, float | None, float]] = {}
        self._sending: set[asyncio.Future[None]] = set()  # notes on their way

    def learn(self, ops: Any, task: Claimed, observed: Observed | None) -> None:
        """Send what this call taught, if anything, with the next batch of outcomes: scheduled before the
        caller submits the task's outcome, so both usually leave in one round trip."""
        op = self.op(task, observed, time.monotonic())
        if op is not None:
            sent = asyncio.ensure_future(self.send(ops, op))
            self._sending.add(sent)
            sent.add_done_callback(self._sending.discard)

    def op(self, task: Claimed, observed: Observed | None, now: float) -> Op[bool] | None:
        """The flow_note call of what this call taught, None when it taught nothing new."""
        taught = self.note(task, observed, now)
        if taught is None:
            return None
        lane = self.lanes[task.task_type]
        return note(task, taught, rate=lane.rate, burst=lane.burst, tokens=lane.tokens)

    async def send(self, ops: Any, op: Op[bool]) -> None:
        """Send a note with the next batch of outcomes (``AsyncScheduler.run_batched``). Flow state is
        learned again from the next responses, so a note Redis did not take is only logged."""
        try:
            await ops.run_batched(op)
        except Exception as exc:
            log.debug("could not note what a call taught flow control: %s", exc)

    def note(self, task: Claimed, observed: Observed | None, now: float) -> Note | None:
        """What this call taught (``now``: monotonic seconds): limits the headers state, per shard; a
        pause until a call is allowed again when none remained; tokens to charge where tokens are limited."""
        lane = self.lanes.get(task.task_type)
        if lane is None or task.key not in lane.keys or (observed is None and not task.reserved):
            return None
        requests = observed.requests if observed else None
        tokens = observed.tokens if observed else None
        limit, token_limit = self._share(requests), self._share(tokens)
        waits = [wait for wait in _exhausted(requests) + _exhausted(tokens) if wait >= MIN_PAUSE_SECONDS]
        pause = max(waits) if waits else None
        slot = (task.shard.index, task.task_type, task.key)
        old_limit, old_tokens, at = self._stated.get(slot, (None, None, -RESTATE_SECONDS))
        stale = now - at >= RESTATE_SECONDS
        new_limit = limit if limit is not None and (stale or limit != old_limit) else None
        new_tokens = token_limit if token_limit is not None and (stale or token_limit != old_tokens) else None
        if new_limit is not None or new_tokens is not None:
            self._stated[slot] = (limit or old_limit, token_limit or old_tokens, now)
        limited = bool(lane.tokens or token_limit or old_tokens or task.reserved)
        used = observed.used if observed and limited else None
        if new_limit is None and new_tokens is None and pause is None and used is None and not task.reserved:
            return None
        return Note(new_limit, new_tokens, pause, used, task.reserved)

    def _share(self, limit: Limit | None) -> float | None:
        per_second = limit.per_second if limit else None
        return per_second / self.shards if per_second else None


def _exhausted(limit: Limit | None) -> list[float]:
    """[seconds until one more call is allowed] when the response said none remained, else [].

    OpenAI's reset is the time until the limit is full again, refilling evenly: with none of `limit`
    remaining, one call is back after reset / limit (a minute's limit of 600 at 0: 0.1 s, not 60 s). With
    no limit stated, the whole reset."""
    if limit is None or limit.remaining is None or limit.remaining >= 1 or not limit.reset:
        return []
    short = (limit.per_minute or 0) - limit.remaining
    return [limit.reset / short if short > 1 else limit.reset]
