"""Redis restart under load: a private redis-server (AOF, appendfsync everysec) is crashed with SIGKILL
while clients submit through `taskq serve` and a `taskq worker` runs, then started again on the same port
and directory.

What is promised: every task the intake acknowledged (HTTP 200, success) more than 1 s before the crash
is there afterwards and finishes. With appendfsync everysec, a crash of the *machine* can lose the last
second of writes, so tasks acknowledged within the last second before the crash may be lost; a crash of
the Redis *process* (this test) loses nothing, because Redis writes the AOF before it replies and the
kernel still holds what it wrote. With TASKQ_DURABILITY=local (run on the bundled valkey-server, which
has WAITAOF) every acknowledged task is promised, the last second included: each answer waited until
its writes were fsynced, which holds for a machine crash too. The intake answers 503 SERVICE_UNAVAILABLE
(never 500) while Redis is down and recovers by itself; the worker reconnects by itself.

Defaults (CI): 3 s of load, 2 s down, 4 s more load; about 20 s. Longer:
TASKQ_RESTART_LOAD_SECONDS=20 TASKQ_RESTART_DOWN_SECONDS=5 pytest tests/test_redis_restart.py -s
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from taskq.store import Store
from tests.support.clients import sync_client
from tests.support.env import IN_CI, env_float
from tests.support.processes import Processes, start_intake, worker_env
from tests.support.redis_server import RedisServer
from tests.support.sentinel import valkey_binary
from tests.support.submitters import Submitter
from tests.support.tasks import org_counters, task_fields
from tests.support.upstream import Upstream
from tests.support.waits import stuck_work, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

LOAD = env_float("TASKQ_RESTART_LOAD_SECONDS", 3.0)
DOWN = env_float("TASKQ_RESTART_DOWN_SECONDS", 2.0)
CREDITS = 10**9
COST = 5  # CHATGPT


@pytest.mark.timeout(180)
@pytest.mark.parametrize("durability", ["none", "local"])
def test_acknowledged_tasks_survive_a_redis_crash_and_everything_reconnects(
    tmp_path: Path, procs: Processes, durability: str
) -> None:
    binary = valkey_binary() if durability != "none" else None
    try:
        server = RedisServer(tmp_path / "redis", binary=binary).start()
    except AssertionError:
        if IN_CI:
            raise
        pytest.skip("no redis-server binary to start a private Redis; mandatory in CI")
    client = sync_client(server.url)
    store = Store(client)
    org, key = store.create_org("restart", credits=CREDITS, concurrency=1000, queue_limit=10**6)
    shard = store.org(org).shard
    try:
        with Upstream("0.02", simulator=True) as sim:
            env = worker_env(server.url, sim.url, TASKQ_LEASE_SECONDS="3", TASKQ_REAPER_INTERVAL_SECONDS="1",
                             TASKQ_DURABILITY=durability)  # fmt: skip
            intake = start_intake(procs, env, workers=1)
            worker = procs.taskq("worker", ["worker", "--processes", "1", "--concurrency", "100"], env)
            load = Submitter(intake, key)
            threads = [threading.Thread(target=load.run, args=(c,), daemon=True) for c in range(3)]
            for thread in threads:
                thread.start()
            time.sleep(LOAD)
            crashed_at = time.time()
            server.crash(signal.SIGKILL)
            time.sleep(DOWN / 2)
            ready_while_down = httpx.get(intake + "/readyz", timeout=15).status_code
            time.sleep(DOWN / 2)
            server.start()
            restarted_at = time.time()
            recovered = wait_for(lambda: httpx.get(intake + "/readyz", timeout=15).status_code == 200,
                                 30, "the intake to be ready again")  # fmt: skip
            after = len(load.acked)
            wait_for(lambda: len(load.acked) > after + 100, 30, "admissions to resume")
            time.sleep(LOAD)
            load.stop.set()
            for thread in threads:
                thread.join(30)

            def finished() -> bool:
                c = org_counters(client, shard, org)
                return c["queued"] + c["inflight"] == 0

            try:
                settled = wait_for(finished, 90, "every task to finish", interval=0.2,
                                   stuck=lambda: stuck_work(client, shard, org))  # fmt: skip
            except AssertionError:  # say why: the counters, what every drain waits on, the logs
                print("counters:", org_counters(client, shard, org), "worker alive:", worker.poll() is None)
                worker.send_signal(signal.SIGTTIN)  # each drain logs its asyncio tasks
                time.sleep(2)
                for name in ("worker", "intake"):
                    print(f"--- {name} log (tail) ---\n" + procs.log(name)[-6000:])
                raise
            worker_alive = worker.poll() is None

            before = [task_id for at, task_id in load.acked if at < crashed_at - 1.0]
            window = [task_id for at, task_id in load.acked if crashed_at - 1.0 <= at < crashed_at]
            later = [task_id for at, task_id in load.acked if at >= restarted_at]
            acked = [task_id for _, task_id in load.acked]
            status = {
                i: s for i, [s] in zip(acked, task_fields(client, shard, acked, ["status"]), strict=True)
            }
            lost_in_window = sum(1 for i in window if status[i] is None)
            # Every task the org has, acknowledged or not: a batch Redis ran just before it was killed
            # was admitted, but its reply was lost and its client saw 503 (what idempotency keys are for).
            admitted = client.lrange(shard.org_tasks(org), 0, -1)
            statuses = Counter(s for [s] in task_fields(client, shard, map(str, admitted), ["status"]))
            completed = statuses["COMPLETED"]
            counters = org_counters(client, shard, org)
    finally:
        procs.close()
        server.stop()
    print(
        f"\n[{durability}] redis SIGKILL after {len(before) + len(window)} acknowledged tasks, down "
        f"{DOWN:g} s: answers {dict(load.answers)}; /readyz while down {ready_while_down}; intake ready "
        f"{recovered:.2f} s after restart; {len(later)} tasks admitted after it; all done {settled:.1f} s "
        "after the load stopped; "
        f"lost in the last second: {lost_in_window}/{len(window)}; admitted without an answer: "
        f"{len(set(admitted) - set(acked))}"
    )
    assert before and later
    if durability != "none":
        assert window and lost_in_window == 0, "a task acknowledged durable was lost"
        assert {status[i] for i in acked} == {"COMPLETED"}
    assert {status[i] for i in before} == {"COMPLETED"}, "a task acknowledged before the crash was lost"
    assert {status[i] for i in later} == {"COMPLETED"}
    assert {s for s in status.values()} <= {"COMPLETED", None}
    assert {code for code, _ in load.answers} <= {200, 503}, load.answers
    assert load.answers[(503, "SERVICE_UNAVAILABLE")] > 0, (
        "no request reached the intake while Redis was down"
    )
    assert ready_while_down == 503
    assert worker_alive, "the worker gave up on Redis"
    assert set(acked) - {i for i in acked if status[i] is None} <= set(admitted)
    assert statuses == {"COMPLETED": len(admitted)}, statuses  # each charged exactly once, below
    assert counters == {"credits": CREDITS - COST * completed, "reserved": 0, "queued": 0, "inflight": 0}
