"""`taskq demo`: one synchronous call, then a realistic batch against a running stack, live progress,
verified webhooks, a summary."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

from taskq.ops import OpsError
from taskq.ops.client import ApiClient
from taskq.ops.progress import Progress
from taskq.ops.receiver import Delivery, Receiver
from taskq.ops.stack import Target, resolve_target
from taskq.ops.taskfile import describe
from taskq.schemas.tasks import TaskType
from taskq.settings import Settings


def _ask(task_type: str, priority: int, **payload: Any) -> tuple[str, dict[str, Any], int]:
    return task_type, payload, priority


#: (taskType, payload, priority): every task type, realistic asks, priorities across 1-10.
VALID: list[tuple[str, dict[str, Any], int]] = [
    _ask("CHATGPT", 9, prompt="What are the best CRM tools for a 10-person B2B startup?", country="US"),
    _ask("CHATGPT", 5, prompt="Compare the Tesla Model Y and the Kia EV9 for a family of five", country="GB"),
    _ask(
        "CHATGPT",
        2,
        prompt="Which accounting software do freelancers in California recommend?",
        country="US",
        state="CA",
        include={"markdown": True},
    ),
    _ask("GEMINI", 7, prompt="Plan a three-day trip to Lisbon on a mid-range budget", country="PT"),
    _ask(
        "GEMINI", 3, prompt="What is the difference between a Roth IRA and a traditional IRA?", country="US"
    ),
    _ask("PERPLEXITY", 8, prompt="Latest research on GLP-1 drugs and heart health", country="US"),
    _ask("PERPLEXITY", 4, prompt="Best noise-cancelling headphones under $300", country="CA"),
    _ask("GROK", 6, prompt="What are people saying about foldable phone battery life?", country="US"),
    _ask("GROK", 1, prompt="Summarize this week's debate on AI regulation in the EU", country="DE"),
    _ask("GOOGLE", 10, query="best espresso machine under 500", country="US"),
    _ask(
        "GOOGLE",
        5,
        query="running shoes for flat feet",
        country="GB",
        include={"aioverview": {"markdown": True}},
    ),
    _ask("GOOGLE_NEWS", 6, query="electric vehicle sales", country="US"),
    _ask("GOOGLE_NEWS", 2, query="EZB Zinsentscheidung", country="DE", hl="de"),
    _ask("AIMODE", 7, prompt="Which CRM is easiest to set up for a small business?", country="US"),
    _ask(
        "AIMODE",
        3,
        prompt="Family-friendly hotels near the beach in Barcelona",
        country="ES",
        device="mobile",
    ),
    _ask(
        "COPILOT",
        8,
        prompt="How do I move a Postgres database to a new server with little downtime?",
        country="US",
    ),
    _ask("COPILOT", 1, prompt="Best laptops for software development this year", country="IN"),
]

IDEMPOTENT = (0, 5, 9)  # these carry idempotency keys; the last invalid task repeats the first one's


def demo_tasks(webhook_url: str, run_id: str) -> tuple[list[dict[str, Any]], set[int]]:
    """The demo batch and the indices of its deliberately invalid tasks."""
    tasks: list[dict[str, Any]] = []
    for i, (task_type, payload, priority) in enumerate(VALID):
        task: dict[str, Any] = {"taskType": task_type, "payload": payload, "priority": priority}
        if i in IDEMPOTENT:
            task["idempotencyKey"] = f"demo-{run_id}-{i}"
        tasks.append(task | {"webhook": {"url": webhook_url}})
    hook = {"webhook": {"url": webhook_url}}
    invalid = [
        {"taskType": "CHATGPT", "payload": {"prompt": "Best CRM tools", "country": "us"}} | hook,
        {"taskType": "BING", "payload": {"query": "best CRM tools", "country": "US"}} | hook,
        {**tasks[IDEMPOTENT[0]], "priority": 10},  # same idempotency key as task 0: refused
    ]
    return tasks + invalid, set(range(len(tasks), len(tasks) + len(invalid)))


def org_secrets(target: Target, org_id: str | None) -> list[str]:
    """The org's webhook secrets: fresh from `taskq org webhook-secret`, else the stack card's copy."""
    stack = target.stack or {}
    card_matches = stack.get("apiKey") == target.api_key
    org_id = org_id or (stack.get("orgId") if card_matches else None)
    if org_id:
        env = dict(os.environ)
        if card_matches and stack.get("redisUrl"):
            env["TASKQ_REDIS_URL"] = stack["redisUrl"]
        cmd = [sys.executable, "-m", "taskq", "org", "webhook-secret", org_id]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode == 0:
            secrets: list[str] = json.loads(done.stdout)["webhookSecrets"]
            return secrets
    if card_matches and stack.get("webhookSecrets"):
        return list(stack["webhookSecrets"])
    raise OpsError("cannot verify webhooks without the organization's secrets: pass --org-id ORG_ID")


def _watch(client: ApiClient, batch_id: str, receiver: Receiver, expected: set[str], timeout: float) -> bool:
    """Live QUEUED -> PROCESSING -> COMPLETED/FAILED line until done and every webhook is in."""
    progress = Progress(tty_interval=0.0, log_interval=3.0)
    start = time.monotonic()
    while True:
        counts = client.batch(batch_id)["counts"]
        got = {d.task_id for d in receiver.snapshot() if d.verified}
        hooks = len(got & expected)
        line = (
            f"QUEUED {counts['QUEUED']:>3} -> PROCESSING {counts['PROCESSING']:>3} -> "
            f"COMPLETED {counts['COMPLETED']:>3} / FAILED {counts['FAILED']:>3}   "
            f"webhooks {hooks}/{len(expected)}   {time.monotonic() - start:5.1f} s"
        )
        finished = counts["QUEUED"] + counts["PROCESSING"] == 0
        if (finished and hooks == len(expected)) or time.monotonic() - start > timeout:
            progress.done(line)
            return finished and hooks == len(expected)
        progress.update(line)
        time.sleep(0.5)


def summary(results: list[dict[str, Any]], deliveries: list[Delivery], expected: set[str]) -> list[str]:
    rows: dict[str, Counter[str]] = {t.value: Counter() for t in TaskType}
    latencies: dict[str, list[int]] = {t.value: [] for t in TaskType}
    for r in results:
        task = r["task"]
        rows[task["taskType"]][task["status"]] += 1
        if task.get("latencyMs") is not None:
            latencies[task["taskType"]].append(int(task["latencyMs"]))
    out = [f"{'task type':<12} {'tasks':>5} {'completed':>9} {'failed':>6} {'p50 ms':>7}"]
    for name, counts in rows.items():
        p50 = f"{statistics.median_low(latencies[name]):>7}" if latencies[name] else f"{'-':>7}"
        out.append(f"{name:<12} {counts.total():>5} {counts['COMPLETED']:>9} {counts['FAILED']:>6} {p50}")
    every = [ms for values in latencies.values() for ms in values]
    total = sum(rows.values(), Counter[str]())
    p50 = str(statistics.median_low(every)) if every else "-"
    out.append(f"{'total':<12} {total.total():>5} {total['COMPLETED']:>9} {total['FAILED']:>6} {p50:>7}")
    failed = [r for r in results if r["task"]["status"] == "FAILED"]
    out.append("")
    out.append(f"failed tasks: {len(failed)}")
    for r in failed:
        error = (r.get("response") or {}).get("error") or {}
        out.append(
            f"  index {r['index']} {r['task']['taskType']}: {error.get('code')} {error.get('message')}"
        )
    verified = [d for d in deliveries if d.verified]
    bad = [d for d in deliveries if not d.verified]
    missing = expected - {d.task_id for d in verified}
    out.append(
        f"webhooks: {len(verified)} received and verified, {len(bad)} failed verification, "
        f"{len(missing)} missing"
    )
    out.extend(f"  webhook {d.msg_id or '(no id)'}: {d.reason}" for d in bad)
    out.extend(f"  no verified webhook for task {task_id}" for task_id in sorted(missing))
    return out


#: The synchronous call the demo makes first: POST /v1/monitor/chatgpt, answered with its result.
SYNC_CALL = {
    "prompt": "Which project management tools do remote teams like best?",
    "country": "US",
    "include": {"markdown": True},
}


def sync_call(client: ApiClient) -> bool:
    """One synchronous monitor call through the queue; prints what came back."""
    started = time.monotonic()
    response = client.monitor("chatgpt", SYNC_CALL)
    took = (time.monotonic() - started) * 1000
    result = response.json()["result"]
    h = response.headers
    print(
        f"synchronous call POST /v1/monitor/chatgpt: {response.status_code} in {took:.0f} ms, "
        f"{len(result.get('sources') or [])} sources, charged {h.get('X-Credits-Charged')} credits "
        f"({h.get('X-Credits-Remaining')} left), concurrency {h.get('X-Concurrency-Current')}/"
        f"{h.get('X-Concurrency-Limit')}"
    )
    print(f"  {str(result.get('text', ''))[:100]!r}")
    return response.status_code == 200 and bool(result.get("text"))


def run(args: argparse.Namespace, settings: Settings) -> int:
    target = resolve_target(settings, args.url, args.api_key)
    secrets = org_secrets(target, args.org_id)
    with Receiver(secrets) as receiver, ApiClient(target.url, target.api_key) as client:
        synced = sync_call(client)
        tasks, invalid = demo_tasks(receiver.url, uuid.uuid4().hex[:8])
        print(f"webhook receiver on {receiver.url}; submitting {len(tasks)} tasks ({len(invalid)} invalid)")
        body = client.submit_batch(tasks)
        rejected = {r["index"]: r["error"] for r in body["results"] if not r["success"]}
        expected = {r["task"]["id"] for r in body["results"] if r["success"]}
        print(f"batch {body['batchId']}: {len(expected)} admitted, {len(rejected)} rejected")
        for index, error in sorted(rejected.items()):
            note = "as intended" if index in invalid else "UNEXPECTED"
            print(f"  index {index} ({note}): {error['code']} {describe(error)}")
        done = _watch(client, body["batchId"], receiver, expected, args.timeout)
        results = list(client.batch_results(body["batchId"]))
        deliveries = receiver.snapshot()
    print()
    print("\n".join(summary(results, deliveries, expected)))
    completed = {r["taskId"] for r in results if r["task"]["status"] == "COMPLETED"}
    verified = {d.task_id for d in deliveries if d.verified}
    ok = (
        synced
        and done
        and set(rejected) == invalid
        and completed == expected
        and expected <= verified
        and all(d.verified for d in deliveries)
    )
    print("\ndemo " + ("passed: every valid task completed, every webhook verified" if ok else "FAILED"))
    return 0 if ok else 1
