"""A Sentinel failover under load, for the failover test and `bench/failover.py`: a primary and one
replica (both AOF) watched by three sentinels; `taskq serve` and `taskq worker` reach them through a
redis+sentinel:// URL; clients submit 10-task batches with idempotency keys, resubmitting a batch with
the same keys until they get an answer (what the 503 "outcome unknown" tells them to do). The primary
is killed -9; once the sentinels have promoted the replica, the old node comes back as its replica.

Measured: every task a client was told about (admitted, or already existing under its key), whether it
is still there after the failover, finishes once and is charged once; how long the intake and the
workers took to resume after the promotion.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from taskq.connection import connect
from taskq.store import Store
from tests.support.processes import Processes, start_intake, worker_env
from tests.support.receiver import ReceiverProcess
from tests.support.sentinel import SentinelGroup
from tests.support.submitters import KeyedSubmitter
from tests.support.tasks import org_counters, task_fields
from tests.support.upstream import Upstream
from tests.support.waits import wait_for

CREDITS = 10**9
COST = 5  # CHATGPT


@dataclass
class FailoverResult:
    durability: str
    acked: int  # tasks clients were told about
    acked_before_kill: int
    lost: int  # of those, missing after the failover
    statuses: Counter[str]  # of every task the org has
    admitted: int  # tasks the org has
    answers: Counter[tuple[int, str]]
    promotion_s: float  # kill -> every sentinel names the new primary
    intake_resume_s: float  # promotion -> first admission answered 200
    worker_resume_s: float  # promotion -> first task charged
    settled_s: float  # load stopped -> nothing queued or running
    counters: dict[str, int]
    completed: int
    webhook_tasks: int  # tasks whose webhook arrived
    webhooks_of_lost: int  # tasks whose webhook arrived though the task is not there
    webhook_ids_per_task: int  # the most distinct webhook-ids one task's events had
    stall: bool = False

    def line(self) -> str:
        return (
            f"[{self.durability}{', stall' if self.stall else ''}] {self.acked} tasks acknowledged "
            f"({self.acked_before_kill} before the kill), "
            f"lost {self.lost}; promotion {self.promotion_s:.1f} s after the kill; intake resumed "
            f"{self.intake_resume_s:.1f} s and workers {self.worker_resume_s:.1f} s after the promotion; all "
            f"done {self.settled_s:.1f} s after the load stopped; statuses {dict(self.statuses)}; answers "
            f"{dict(self.answers)}; webhooks for {self.webhook_tasks} tasks, {self.webhooks_of_lost} of them "
            f"for tasks that were lost, at most {self.webhook_ids_per_task} webhook-id per task"
        )


def run_failover(
    durability: str, workdir: Path, load: float = 3.0, after: float = 3.0, stall: bool = False
) -> FailoverResult:
    """Kill the primary -9 (or, with stall, stop it with SIGSTOP until the replica is promoted, then let
    it run again: until the sentinels demote it, it still takes writes on the connections it had)."""
    group = SentinelGroup(appendfsync="always").start()
    procs = Processes(workdir / "logs")
    try:
        client = connect(group.url)
        store = Store(client)
        org, key = store.create_org("failover", credits=CREDITS, concurrency=1000, queue_limit=10**6)
        shard = store.org(org).shard
        hooks = ReceiverProcess(secrets=store.webhook_secrets(org)).start()
        with Upstream("0.02", simulator=True) as sim:
            # A send that fails while the primary is gone (or times out on a loaded machine) is retried
            # within seconds, not on the default schedule's 300 s second step.
            env = worker_env(group.url, sim.url, TASKQ_LEASE_SECONDS="3", TASKQ_REAPER_INTERVAL_SECONDS="1",
                             TASKQ_DURABILITY=durability, TASKQ_WEBHOOK_TIMEOUT_SECONDS="10",
                             TASKQ_WEBHOOK_SCHEDULE_SECONDS=json.dumps([0.5, 1, 2, 4] + [8] * 8))  # fmt: skip
            intake = start_intake(procs, env, workers=1)
            procs.taskq("worker", ["worker", "--processes", "1", "--concurrency", "100"], env)
            submitter = KeyedSubmitter(intake, key, hooks.url)
            threads = [threading.Thread(target=submitter.run, args=(c,), daemon=True) for c in range(3)]
            for thread in threads:
                thread.start()
            wait_for(lambda: len(submitter.acked) >= 100, 60, "admissions to start")
            time.sleep(load)
            killed_at = time.time()
            with submitter.lock:
                acked_before_kill = len(submitter.acked)
            old = group.primary()
            old.pause() if stall else old.kill()
            group.wait_promotion(old)
            promoted_at = time.time()
            new = group.primary()
            client = new.client()  # the harness reads the new primary (a stalled old one may come back)
            charged_at_promotion = org_counters(client, shard, org)["credits"]
            if stall:
                old.resume()  # the sentinels turn it into a replica of the new primary by themselves
            else:
                old.start("--replicaof", "127.0.0.1", str(new.port))  # the lost node comes back as a replica
            wait_for(lambda: submitter.ok_after(promoted_at), 60, "the intake to admit again")
            with submitter.lock:
                first = min(at for at, _ in submitter.acked.values() if at >= promoted_at)
            intake_resume = first - promoted_at
            wait_for(lambda: org_counters(client, shard, org)["credits"] < charged_at_promotion, 60,
                     "the workers to complete a task again", interval=0.1)  # fmt: skip
            worker_resume = time.time() - promoted_at
            time.sleep(after)
            submitter.stop.set()
            for thread in threads:
                thread.join(60)

            def finished() -> bool:
                counts = org_counters(client, shard, org)
                return counts["queued"] + counts["inflight"] == 0

            settled = wait_for(finished, 120, "every task to finish", interval=0.2)

            def delivered() -> bool:
                return not client.zcard(shard.wh_due) and not client.zcard(shard.wh_proc)

            wait_for(delivered, 120, "every webhook to be delivered", interval=0.2)
        acked = [task_id for _, task_id in submitter.acked.values()]
        status = [s for [s] in task_fields(client, shard, acked, ["status"])]
        admitted = client.lrange(shard.org_tasks(org), 0, -1)
        statuses = Counter(s for [s] in task_fields(client, shard, map(str, admitted), ["status"]))
        events = hooks.event_ids_by_task()
        return FailoverResult(
            durability=durability,
            acked=len(acked),
            acked_before_kill=acked_before_kill,
            lost=sum(1 for s in status if s is None),
            statuses=statuses,
            admitted=len(admitted),
            answers=submitter.answers,
            promotion_s=promoted_at - killed_at,
            intake_resume_s=intake_resume,
            worker_resume_s=worker_resume,
            settled_s=settled,
            counters=org_counters(client, shard, org),
            completed=statuses["COMPLETED"],
            stall=stall,
            webhook_tasks=len(events),
            webhooks_of_lost=len(set(events) - set(admitted)),
            webhook_ids_per_task=max((len(ids) for ids in events.values()), default=0),
        )
    finally:
        procs.close()
        hooks.stop()
        group.close()
