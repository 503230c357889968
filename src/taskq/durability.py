"""Durable acknowledgements: group commits that wait until what taskq wrote is on disk (WAITAOF).

``TASKQ_DURABILITY=local`` waits until a write is fsynced to the server's append-only file (WAITAOF 1 0),
``replica`` until it is also held by ``TASKQ_DURABILITY_REPLICAS`` replicas (WAIT n), before taskq
answers for it (the intake) or forgets it (a worker's task outcome). (WAITAOF 1 n, the replicas' own
fsync, is not used: Valkey 8.1 replicas report their fsyncs once a second, so each commit took ~1 s.)

WAITAOF and WAIT wait for the writes of *their own connection*, and requests write on connections of
their own. So a commit writes a marker (``keys.COMMIT_MARK``) and sends the waits right behind it:
the marker comes later in the server's replication stream than every write the server answered before
it, so once the marker is fsynced, all of those are. Every caller whose write was answered before a
commit's marker left shares that commit: one wait for all the requests of a moment (group commit),
never one fsync each. A caller that arrives while a commit is under way waits for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskq import keys
from taskq.errors import Unconfirmed
from taskq.redistypes import AsyncPipeline, AsyncRedis, Pipeline, Redis
from taskq.settings import Settings

log = logging.getLogger("taskq.durability")


class DurabilityUnsupported(RuntimeError):
    """The server cannot give the durability asked for: the process refuses to start."""


@dataclass(frozen=True, slots=True)
class Policy:
    """What a commit waits for: WAITAOF numlocal numreplicas timeout, and how to read its answer."""

    mode: str
    local: int
    replicas: int
    timeout_ms: int

    @classmethod
    def of(cls, settings: Settings) -> Policy | None:
        """The policy of these settings; None for ``none`` (answer as soon as Redis has applied it)."""
        if settings.durability == "none":
            return None
        replicas = settings.durability_replicas if settings.durability == "replica" else 0
        return cls(settings.durability, 1, replicas, settings.durability_timeout_ms)

    def where(self) -> str:
        replicas = f" and {self.replicas} replica{'s' if self.replicas > 1 else ''}" if self.replicas else ""
        return f"the Redis append-only file{replicas}"

    def queue(self, pipe: Pipeline | AsyncPipeline) -> None:
        """The commit: the marker write, then the waits for it, on the pipeline's one connection."""
        pipe.incr(keys.COMMIT_MARK)
        pipe.execute_command("WAITAOF", self.local, 0, self.timeout_ms)
        if self.replicas:
            pipe.execute_command("WAIT", self.replicas, self.timeout_ms)

    def check(self, replies: list[Any]) -> None:
        """Raise Unconfirmed unless the commit's answers (marker, WAITAOF [local, _], WAIT n) meet it."""
        local = int(replies[1][0])
        replicas = int(replies[2]) if self.replicas else 0
        if local < self.local or replicas < self.replicas:
            raise self.unconfirmed(f"fsynced locally: {local}, replicas holding it: {replicas}")

    def unconfirmed(self, why: str) -> Unconfirmed:
        return Unconfirmed(
            f"The write could not be confirmed on {self.where()} within {self.timeout_ms} ms ({why}): its "
            "outcome is unknown. Resubmitting with the same idempotency keys is safe: tasks that were "
            "admitted come back as RESOURCE_ALREADY_EXISTS with their taskId, the others are admitted.",
            {"outcome": "unknown", "durability": self.mode},
        )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Committer:
    """Group commits for a threaded process (the intake): ``confirm()`` after a write was answered.

    The first caller with no commit under way leads one (marker + WAITAOF in one round trip on the
    client's pool) in its own thread; the others wait on a condition for the commit that started after
    them. Generations count commits: a caller needs the one numbered after the latest started when it
    came, and any successful commit from that one on covers it.
    """

    def __init__(self, client: Redis, policy: Policy) -> None:
        self.client = client
        self.policy = policy
        self._cond = threading.Condition()
        self._started = 0  # the last commit started
        self._finished = 0  # the last commit finished
        self._confirmed = 0  # the last commit that succeeded
        self._failure: BaseException | None = None  # why the last failed commit failed
        self.commits = 0  # commits sent (for the benchmark: how many requests each one carried)

    def confirm(self) -> None:
        """Return once every write this thread saw answered is durable; raise Unconfirmed otherwise."""
        with self._cond:
            need = self._started + 1
            while self._finished < need and not (self._started < need and self._finished == self._started):
                self._cond.wait()
            lead = self._finished < need
            if lead:
                self._started = need
        if lead:
            failure: BaseException | None = RuntimeError("the commit was interrupted")
            try:
                self._commit()
                failure = None
            except Exception as exc:
                failure = exc
            finally:
                with self._cond:
                    self._finished = need
                    if failure is None:
                        self._confirmed = need
                    else:
                        self._failure = failure
                    self._cond.notify_all()
        with self._cond:
            if self._confirmed >= need:
                return
            failure = self._failure
        if isinstance(failure, Unconfirmed):
            raise failure
        raise self.policy.unconfirmed(_describe(failure) if failure else "no answer") from failure

    def _commit(self) -> None:
        self.commits += 1
        pipe = self.client.pipeline(transaction=False)
        self.policy.queue(pipe)
        self.policy.check(pipe.execute())


class AsyncCommitter:
    """Group commits for an asyncio process (a worker's drain): ``await confirm()`` after a write.

    Callers queue a future; one task sends commits back to back while callers wait, each covering
    every caller queued before it left (as AsyncScheduler.run_batched shares round trips).
    """

    def __init__(self, client: AsyncRedis, policy: Policy) -> None:
        self.client = client
        self.policy = policy
        self._waiting: list[asyncio.Future[None]] = []
        self._sender: asyncio.Task[None] | None = None
        self.commits = 0

    async def confirm(self) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        await done

    async def _send(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._commit()
            except Exception as exc:
                for done in batch:
                    if not done.done():
                        why = exc if isinstance(exc, Unconfirmed) else self.policy.unconfirmed(_describe(exc))
                        done.set_exception(why)
                continue
            except BaseException:  # cancelled (loop shutting down): so are the callers still waiting
                for done in [*batch, *self._waiting]:
                    done.cancel()
                self._waiting = []
                raise
            for done in batch:
                if not done.done():
                    done.set_result(None)

    async def _commit(self) -> None:
        self.commits += 1
        pipe = self.client.pipeline(transaction=False)
        self.policy.queue(pipe)
        self.policy.check(await pipe.execute())


def check_server(client: Redis, settings: Settings) -> list[str]:
    """Refuse (DurabilityUnsupported) a server that cannot give the durability asked for; return
    warnings about what it can give only later (replicas not yet connected) or slowly.

    Never downgrades: a server without WAITAOF (Redis before 7.2) or without an append-only file makes
    ``local`` and ``replica`` refuse to start. A server that does not answer now (restarting, failing
    over) cannot be checked: the process starts as it always did, and each commit fails until it can.
    """
    policy = Policy.of(settings)
    if policy is None:
        return []
    setting = f"TASKQ_DURABILITY={policy.mode}"
    if settings.redis_cluster or type(client).__name__ == "RedisCluster":
        raise DurabilityUnsupported(f"{setting} is not supported on a Redis Cluster (one primary + replicas)")
    try:
        return _check(client, policy, setting)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        return [f"{setting}: could not check the server now ({exc}); every commit is checked"]


def _check(client: Redis, policy: Policy, setting: str) -> list[str]:
    info = client.info("server")
    name = "Valkey" if "valkey_version" in info else "Redis"
    server = f"{name} {info.get('valkey_version') or info['redis_version']}"
    try:
        client.execute_command("WAITAOF", 0, 0, 1)
    except ResponseError as exc:
        if "unknown command" in str(exc).lower():
            raise DurabilityUnsupported(
                f"{setting} needs the WAITAOF command (Redis or Valkey 7.2 or later) and the server is "
                f"{server}: upgrade the server, or set TASKQ_DURABILITY=none (acknowledged writes can "
                "then be lost in a crash or a failover)"
            ) from exc
        raise DurabilityUnsupported(f"{setting}: the server refused WAITAOF: {exc}") from exc
    if not int(client.info("persistence").get("aof_enabled", 0)):
        raise DurabilityUnsupported(
            f"{setting} needs the server's append-only file: start it with `appendonly yes` ({server} has "
            "it off)"
        )
    warnings = []
    if policy.replicas:
        connected = int(client.info("replication").get("connected_slaves", 0))
        if connected < policy.replicas:
            warnings.append(
                f"{setting} waits for {policy.replicas} replica(s) and {connected} are connected: writes are "
                "answered 503 until they are"
            )
    try:
        fsync = client.config_get("appendfsync").get("appendfsync")
        hz = int(client.config_get("hz").get("hz", 10))
    except ResponseError:  # CONFIG disabled (managed services): nothing to advise
        fsync = None
    if fsync == "everysec":
        warnings.append(
            f"appendfsync everysec: each commit waits for the server's next fsync (up to 1/hz = "
            f"{1000 // max(hz, 1)} ms); `appendfsync always` or a higher hz makes commits faster"
        )
    return warnings


def committer(client: Redis, settings: Settings) -> Committer | None:
    """The intake's committer for these settings after checking the server, None for ``none``."""
    policy = Policy.of(settings)
    if policy is None:
        return None
    for warning in check_server(client, settings):
        log.warning("%s", warning)
    return Committer(client, policy)
