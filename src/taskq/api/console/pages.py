"""Console pages: overview, tasks, a task, a batch, search and workers."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from flask import make_response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from taskq import batches, deliveries, lookup
from taskq.api import ops, store
from taskq.api.charts import minute_chart
from taskq.api.console import PAGE, bp, csrf, notice, signed_in_page
from taskq.batches import STATUSES, TaskFilter
from taskq.errors import NotFound, ValidationFailed
from taskq.keys import ATTEMPT_LOG, TASK_FIELDS
from taskq.schemas.tasks import TERMINAL, TaskRecord, TaskType, iso_ms, summary_view
from taskq.store import task_fields


@bp.get("")
def overview() -> ResponseReturnValue:
    token = request.args.get("token")
    if token is not None:
        return signed_in_page(token)
    page_csrf = csrf()
    return render_template(
        "console/overview.html", csrf=page_csrf, nav="overview", notice=notice(), **overview_sections()
    )


def org_names() -> dict[str, str]:
    orgs = store().list_orgs()
    pipe = store().client.pipeline(transaction=False)
    for org_id in orgs:
        pipe.hget(store().org(org_id).shard.org(org_id), "name")
    return {org_id: name or org_id for org_id, name in zip(orgs, pipe.execute() if orgs else [], strict=True)}


def overview_sections() -> dict[str, Any]:
    """Everything the overview shows; each key feeds one block of overview.html."""
    data = ops.dashboard_data()
    full = data["series"][:-1]
    done = sum(p["completed"] + p["failed"] for p in data["series"])  # a rate: this minute counts too
    failed = sum(p["failed"] for p in data["series"])
    return {
        "data": data,
        "kpis": {
            "queued": sum(o["queued"] for o in data["orgs"]),
            "processing": sum(o["processing"] for o in data["orgs"]),
            "completedPerMinute": data["recent"]["completed"],
            "failedPerMinute": data["recent"]["failed"],
            "failureRate": f"{100 * failed / done:.1f}%" if done else "-",
            "completed": data["totals"]["completed"],
            "failed": data["totals"]["failed"],
            "backlog": data["webhookBacklog"],
            "workersAlive": sum(1 for w in data["workers"] if w["alive"]),
        },
        "throughput": minute_chart(data["series"], "admitted", "completed"),
        "failures": minute_chart(data["series"], "failed"),
        "window": {
            "admitted": sum(p["admitted"] for p in full),
            "completed": sum(p["completed"] for p in full),
            "failed": sum(p["failed"] for p in full),
        },
        "lanes": provider_lanes(data),
        "schedules": data.get("schedules", []),
    }


def provider_lanes(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task type: calls in flight, the flow-control state of its lane and keys (taskq.flow),
    whether an operator paused it, and the form that pauses or resumes it."""
    inflight = data["inflightByProvider"]
    flow_rows = {row["provider"]: row for row in data.get("lanes", [])}
    rows = []
    for t in TaskType:
        lane = flow_rows.get(t.value, {})
        paused = lane.get("state") == "paused-by-operator"
        verb = "resume" if paused else "pause"
        rows.append(
            {
                "type": t.value,
                "inflight": int(inflight.get(t.value, 0)),
                "paused": paused,
                "state": lane.get("state", "running"),
                "why": lane.get("why", ""),
                "keys": lane.get("keys", []),
                "action": url_for(f"console.lane_{verb}", provider=t.value),
            }
        )
    return rows


# Tasks --------------------------------------------------------------------------------------------
def _filter_args() -> tuple[TaskFilter, str | None, dict[str, str]]:
    args = request.args
    status = args.get("status") or None
    task_type = args.get("type") or None
    priority = args.get("priority") or None
    batch = (args.get("batch") or "").strip() or None
    org = args.get("org") or None
    if status is not None and status not in STATUSES:
        raise ValidationFailed(f"Unknown status {status!r}")
    if task_type is not None and task_type not in TaskType.__members__:
        raise ValidationFailed(f"Unknown task type {task_type!r}")
    if priority is not None and not (priority.isascii() and priority.isdigit() and 1 <= int(priority) <= 10):
        raise ValidationFailed("Priority is a number from 1 to 10")
    filters = {"status": status, "type": task_type, "priority": priority, "batch": batch, "org": org}
    shown = {k: v for k, v in filters.items() if v}
    return TaskFilter(status, task_type, int(priority) if priority else None, batch), org, shown


@bp.get("/tasks")
def tasks() -> ResponseReturnValue:
    page_csrf = csrf()
    flt, org, shown = _filter_args()
    names = org_names()
    if org is not None and org not in names:
        raise NotFound(f"Organization {org} not found", {"id": org})
    if flt.batch_id is not None:
        owner = lookup.find_batch(store(), flt.batch_id)
        scope = [owner.id] if owner is not None and org in (None, owner.id) else []
    else:
        scope = [org] if org else list(names)
    page = lookup.list_all(store(), scope, flt, request.args.get("cursor"), PAGE)
    paging: dict[str, Any] = {**shown, "cursor": page.next_cursor}
    next_url = url_for("console.tasks", **paging) if page.next_cursor else None
    return render_template(
        "console/tasks.html",
        csrf=page_csrf,
        nav="tasks",
        rows=page.rows,
        names=names,
        shown=shown,
        statuses=STATUSES,
        types=[t.value for t in TaskType],
        next_url=next_url,
        paged=bool(request.args.get("cursor")),
        status_link=lambda s: _status_link(shown, s),
    )


def _status_link(shown: dict[str, str], status: str | None) -> str:
    args = {k: v for k, v in shown.items() if k != "status"} | ({"status": status} if status else {})
    return url_for("console.tasks") + ("?" + urlencode(args) if args else "")


def attempts(record: TaskRecord, log: str | None) -> list[dict[str, Any]]:
    """Every attempt of a task: the logged ones that ended in a retry or an expired lease, then the
    last one, running or finished."""
    rows = [json.loads(line) for line in (log or "").split("\n") if line]
    for row in rows:
        row["at"] = iso_ms(int(row["at"]))
        row["due"] = iso_ms(int(row["due"])) if row.get("due") else None
    if record.attempts > len(rows):
        last: dict[str, Any] = {"attempt": record.attempts, "outcome": record.status, "at": None}
        if record.status in TERMINAL and record.finished_ms is not None:
            last["at"] = iso_ms(record.finished_ms)
        if record.error_json and record.status != "COMPLETED":
            error = json.loads(record.error_json)
            last |= {"code": error.get("code"), "message": error.get("message")}
        rows.append(last)
    return rows


@bp.get("/tasks/<task_id>")
def task(task_id: str) -> ResponseReturnValue:
    page_csrf = csrf()
    found = lookup.find_task(store(), task_id)
    if found is None:
        raise NotFound(f"No task with id {task_id}", {"id": task_id})
    org, record = found
    history = deliveries.history(store(), org, task_id)
    log = store().client.hget(org.shard.task(task_id), ATTEMPT_LOG)
    return render_template(
        "console/task.html",
        csrf=page_csrf,
        nav="tasks",
        t=record,
        org=org.id,
        org_name=org_names().get(org.id),
        summary=summary_view(record),
        payload=_pretty(record.payload_json),
        result=_pretty(record.result_json),
        error=_pretty(record.error_json),
        attempts=attempts(record, log),
        history=history,
        started=iso_ms(record.started_ms) if record.started_ms else None,
        finished=iso_ms(record.finished_ms) if record.finished_ms else None,
        terminal=record.status in TERMINAL,
        notice=notice(),
    )


def _pretty(raw: str | None) -> str | None:
    return json.dumps(json.loads(raw), indent=2, ensure_ascii=False) if raw else None


# Batches ------------------------------------------------------------------------------------------
@bp.get("/batches/<batch_id>")
def batch(batch_id: str) -> ResponseReturnValue:
    page_csrf = csrf()
    org = lookup.find_batch(store(), batch_id)
    if org is None:
        raise NotFound(f"No batch with id {batch_id}", {"id": batch_id})
    view = batches.batch_view(store(), org, batch_id)
    start = request.args.get("from", "0")
    offset = int(start) if start.isascii() and start.isdigit() else 0
    window = [(i, t) for i, t in enumerate(view["taskIds"]) if t][offset : offset + PAGE]
    pipe = store().client.pipeline(transaction=False)
    for _, task_id in window:
        pipe.hmget(org.shard.task(task_id), TASK_FIELDS)
    rows = []
    for (index, task_id), values in zip(window, pipe.execute() if window else [], strict=True):
        fields = task_fields(values)
        shown = summary_view(TaskRecord.from_hash(task_id, fields)) if fields else {"status": "EXPIRED"}
        rows.append({"index": index, **shown, "id": task_id})
    admitted = sum(1 for t in view["taskIds"] if t)
    return render_template(
        "console/batch.html",
        csrf=page_csrf,
        nav="tasks",
        b=view,
        org=org.id,
        org_name=org_names().get(org.id),
        rows=rows,
        offset=offset,
        page=PAGE,
        admitted=admitted,
        notice=notice(),
    )


# Search and workers -------------------------------------------------------------------------------
@bp.get("/search")
def search() -> ResponseReturnValue:
    page_csrf = csrf()
    query = request.args.get("q", "").strip()
    if lookup.find_task(store(), query) is not None:
        return redirect(url_for("console.task", task_id=query))
    if lookup.find_batch(store(), query) is not None:
        return redirect(url_for("console.batch", batch_id=query))
    return make_response(render_template("console/search.html", csrf=page_csrf, nav=None, query=query), 404)


@bp.get("/workers")
def workers() -> ResponseReturnValue:
    page_csrf = csrf()
    return render_template(
        "console/workers.html", csrf=page_csrf, nav="workers", workers=ops._workers(store().client)
    )
