"""RQ hosting: a pool of RQ workers, each running back-to-back drain jobs from its own private queue.

Each ``DrainWorker`` listens only on ``taskq-drain-<its name>`` and enqueues its next drain job there
right before every dequeue, so a drain is always waiting for it; a process the pool respawns after a
kill -9 has a new name, a new queue and a fresh job. Queues of workers that are gone are deleted by
the next worker that starts. Each drain runs in a forked work horse, so RQ recycles the process after
every drain. A stop request (SIGINT from the pool, SIGTERM) is forwarded to the horse as SIGUSR1: the
drain stops claiming at once, finishes or releases its calls, and the job returns.

RQ's own keys go to ``rq_url()``: a plain Redis, since RQ's multi-key commands cannot run on a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any
from uuid import uuid4

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Worker
from rq.serializers import JSONSerializer
from rq.worker_pool import WorkerPool

from taskq.connection import connect, is_cluster_url
from taskq.settings import Settings, load_settings
from taskq.worker.debug import DUMP_SIGNAL
from taskq.worker.drain import drain
from taskq.worker.eventloop import run_loop

log = logging.getLogger("taskq.worker")

QUEUE_PREFIX = "taskq-drain-"
JOB = "taskq.worker.hosting.run"

_hosted: Settings | None = None  # settings handed down by `taskq worker` through fork memory
_stop_early = False  # a stop signal that arrived in the work horse before its event loop listened


def host(settings: Settings) -> None:
    """Make these settings the ones drains in this process (and its forks) use; secrets stay off Redis."""
    global _hosted
    _hosted = settings


def note_stop(signum: int, frame: Any) -> None:
    """Plain signal handler for the gap between fork and the event loop taking over."""
    global _stop_early
    _stop_early = True


def run(concurrency: int | None = None, seconds: float | None = None) -> dict[str, int]:
    """RQ job: one drain in this work horse (settings from `taskq worker`, else the environment)."""
    from rq import get_current_job

    settings = _hosted or load_settings()
    job = get_current_job()
    return run_loop(
        drain(
            settings,
            concurrency=concurrency or settings.worker_concurrency,
            seconds=seconds if seconds is not None else settings.drain_seconds,
            parent_pid=os.getppid() if _hosted is not None else None,
            rq_worker=job.worker_name if job is not None else None,
            stopped_early=lambda: _stop_early,
        )
    )


def queue_name(worker_name: str) -> str:
    return QUEUE_PREFIX + worker_name


class DrainWorker(Worker):
    """An RQ worker whose only job is the drain; configured by ``worker_class()``."""

    concurrency = 200
    drain_seconds = 600.0
    job_timeout = 900
    job_monitoring_interval = 5  # how often the parent looks at its horse (and re-forwards a stop)

    rq_redis_url: str | None = None  # the pool hands over a copy of its connection; this builds one anew

    def __init__(self, queues: Any, name: str | None = None, **kwargs: Any) -> None:
        name = name or uuid4().hex
        if self.rq_redis_url is not None:
            kwargs["connection"] = rq_client(self.rq_redis_url)
        self._pool_pid = os.getppid()  # the pool forked this process; if it goes, this worker stops
        own = Queue(queue_name(name), connection=kwargs["connection"], serializer=JSONSerializer)
        kwargs["serializer"] = JSONSerializer
        kwargs["job_monitoring_interval"] = self.job_monitoring_interval  # RQ's own default is 30 s
        super().__init__([own], name=name, **kwargs)

    def unsubscribe(self) -> None:
        # rq unsubscribes, then stops and joins its pubsub thread. With redis-py 8 that thread, when it
        # reads the UNSUBSCRIBE reply before it is told to stop, goes on to wait up to rq's 60 s for a
        # subscription that never comes, and the worker's exit waits with it. Told first, it ends at
        # that reply.
        thread = getattr(self, "pubsub_thread", None)
        if thread is not None:
            thread._running.clear()
        super().unsubscribe()  # type: ignore[no-untyped-call]

    def work(self, *args: Any, **kwargs: Any) -> bool:
        kwargs["with_scheduler"] = False  # no RQ scheduler process: our retries live in T:delayed
        self._delete_orphan_queues()
        worked: bool = super().work(*args, **kwargs)
        return worked

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        if not self._stop_requested and self.queues[0].count == 0:
            self.queues[0].enqueue(
                JOB,
                kwargs={"concurrency": self.concurrency, "seconds": self.drain_seconds},
                job_timeout=self.job_timeout,
                result_ttl=3600,
                failure_ttl=86400,
                description=f"taskq drain ({self.concurrency} calls, {self.drain_seconds:g}s)",
            )
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def execute_job(self, job: Any, queue: Any) -> None:
        if self._stop_requested:  # the stop came between dequeue and fork: don't start a drain at all
            return
        super().execute_job(job, queue)

    def handle_warm_shutdown_request(self) -> None:
        """RQ would wait for the drain to run out; tell it to wind down now (HerokuWorker does the same)."""
        self._forward_stop()

    def maintain_heartbeats(self, job: Any, execution: Any) -> None:
        if os.getppid() != self._pool_pid and not self._stop_requested:
            # `taskq worker` was killed (kill -9, OOM): nobody supervises this worker any more, so it
            # winds its drain down and exits rather than run on as an orphan.
            log.warning("the worker pool %d is gone; stopping this worker", self._pool_pid)
            self._stop_requested = True  # the work loop ends once the drain has wound down
        if self._stop_requested:
            self._forward_stop()  # repeated in case the horse had not installed its handler yet
        try:
            super().maintain_heartbeats(job, execution)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # RQ would quit here and orphan a drain that rides out the outage by itself; keep watching
            # it instead (the next beat re-creates the worker's key if it expired meanwhile).
            log.warning("RQ heartbeat failed (%s); the drain keeps running", exc)

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()  # type: ignore[no-untyped-call]
        signal.signal(DUMP_SIGNAL, lambda signum, frame: self._forward(DUMP_SIGNAL))

    def setup_work_horse_signals(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the parent; it forwards SIGUSR1
        signal.signal(signal.SIGTERM, note_stop)  # e.g. systemd signalling the whole cgroup
        signal.signal(signal.SIGUSR1, note_stop)

    def teardown(self) -> None:
        super().teardown()  # type: ignore[no-untyped-call]
        self.queues[0].delete(delete_jobs=True)

    def _forward_stop(self) -> None:
        self._forward(signal.SIGUSR1)

    def _forward(self, signum: int) -> None:
        if self.horse_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.horse_pid, signum)

    def _delete_orphan_queues(self) -> None:
        """Private queues whose worker is no longer registered (killed, its key expired) are deleted."""
        alive = {w.name for w in Worker.all(connection=self.connection)} | {self.name}
        for queue in Queue.all(connection=self.connection, serializer=JSONSerializer):
            owner = queue.name.removeprefix(QUEUE_PREFIX)
            if queue.name.startswith(QUEUE_PREFIX) and owner not in alive:
                log.info("deleting the drain queue of worker %s, which is gone", owner)
                queue.delete(delete_jobs=True)


def worker_class(settings: Settings, concurrency: int, drain_seconds: float) -> type[DrainWorker]:
    """A DrainWorker subclass carrying this run's sizing (workers are forked, so nothing is pickled)."""
    timeout = int(drain_seconds + settings.longest_provider_timeout() + settings.shutdown_grace_seconds + 120)
    attrs = {"concurrency": concurrency, "drain_seconds": drain_seconds, "job_timeout": timeout,
             "rq_redis_url": rq_url(settings)}  # fmt: skip
    return type("DrainWorker", (DrainWorker,), attrs)


def rq_url(settings: Settings) -> str:
    """The plain Redis for RQ's data: TASKQ_RQ_REDIS_URL, else the queue Redis unless that is a cluster."""
    if settings.rq_redis_url:
        if is_cluster_url(settings.rq_redis_url):
            raise ValueError("TASKQ_RQ_REDIS_URL must be a plain Redis: RQ does not run on a Redis Cluster")
        return settings.rq_redis_url
    url = settings.redis_url or "redis://127.0.0.1:6379/0"
    if settings.redis_cluster or is_cluster_url(url):
        raise ValueError(
            "the queue Redis is a cluster, and RQ (which supervises the worker processes) needs a plain "
            "Redis: set TASKQ_RQ_REDIS_URL=redis://host:port/db (any small Redis; it holds only RQ's "
            "worker registry and drain jobs)"
        )
    return url


def rq_client(url: str) -> Any:
    """RQ's client (bytes, as RQ expects): a plain Redis, or its primary through the sentinels."""
    return connect(url, decode_responses=False)


def serve(settings: Settings, *, processes: int, concurrency: int, drain_seconds: float) -> int:
    """Run `processes` RQ-supervised drain workers until SIGTERM/SIGINT; respawn any that die."""
    host(settings)
    connection = rq_client(rq_url(settings))  # RQ only; the drains use settings.redis_url
    pool = WorkerPool(
        [QUEUE_PREFIX + "pool"],  # placeholder: each worker swaps in its own queue
        connection=connection,
        num_workers=processes,
        worker_class=worker_class(settings, concurrency, drain_seconds),
        serializer=JSONSerializer,
    )

    def dump(signum: int, frame: Any) -> None:  # `kill -TTIN`: every drain logs its asyncio tasks
        for worker in list(pool.worker_dict.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signum)

    signal.signal(DUMP_SIGNAL, dump)
    pool.start(burst=False, logging_level=settings.log_level)
    return 0
