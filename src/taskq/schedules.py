"""Recurring schedules: stored per organization, each occurrence fired once, by whichever worker claims it.

A schedule lives in its organization's shard: its hash ``T:sched:<id>`` and its next fire time in the
shard's ``T:scheds`` (the one thing idle schedule loops wait on). Firing an occurrence:

1. ``sched_claim.lua`` claims it atomically (the schedule's next fire time as the caller read it is the
   compare-and-set), parks the schedule in ``T:scheds`` until the claim ends (FIRING_LEASE_MS) and
   hands out a fencing token. Every other worker that woke for it gets nothing.
2. Its tasks are admitted as one batch through the normal admission (validation, idempotency,
   credits, queue limit) under a batch id made from the schedule id and the occurrence: a batch id
   admits once, so a firing taken over after its worker died cannot admit twice.
3. ``sched_record.lua`` stores the run and moves the schedule to its next occurrence, if its token
   still holds.

A worker killed between 1 and 3 leaves the claim to run out; the next worker takes it over with the
same occurrence: admitted already (the batch exists: the run is read from it) or not (admitted now).
Missed occurrences (no worker ran, or a firing was late) are not fired one by one: a schedule due
fires the latest occurrence due, once, then goes on from there.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskq import keys
from taskq.admission import Accepted, WebhookCheck, admit, validate
from taskq.errors import AlreadyExists, NotFound, QueueLimitExceeded, TaskqError, ValidationFailed
from taskq.keys import Shard
from taskq.recurrence import BadRecurrence, Recurrence, check_cron, zone
from taskq.schemas.schedules import ScheduleFields, parse_schedule
from taskq.schemas.tasks import FieldError, TaskRequest, iso_ms, parse_task
from taskq.settings import Settings
from taskq.store import Org, Store, now_ms

#: How long a firing's claim holds; a firing unrecorded by then is taken over by another worker.
FIRING_LEASE_MS = 2000
#: A schedule still due after this worker tried to fire it is looked at again this much later.
RETRY_MS = 100
#: Recent runs kept per schedule.
RUNS_KEPT = 20
#: Batch ids of firings: uuid5 of the schedule id and the occurrence in this namespace.
FIRING_NAMESPACE = uuid.UUID("5d0c2c8e-6f7b-4c59-9a8e-2f3f1b7c9e41")
#: Idempotency keys in a schedule's tasks get ":<occurrence>" appended at each firing (24 characters).
IDEM_SUFFIX_CHARS = 25

#: Fields of the schedule hash a firing reads before claiming (not the tasks).
TIMING_FIELDS = ["org", "next", "firing", "until", "paused", "cron", "every", "tz", "anchor"]
VIEW_FIELDS = ["org", "name", "cron", "every", "tz", "anchor", "hook", "paused", "created", "updated",
               "next", "firing", "last", "count"]  # fmt: skip


def firing_batch_id(schedule_id: str, occurrence_ms: int) -> str:
    """The batch id of one occurrence's firing: the same for every worker that fires it."""
    return str(uuid.uuid5(FIRING_NAMESPACE, f"{schedule_id}:{occurrence_ms}"))


def recurrence(fields: dict[str, str]) -> Recurrence:
    every = fields.get("every") or ""
    return Recurrence(
        cron=fields.get("cron") or None,
        every_ms=int(every) if every else None,
        timezone=fields.get("tz") or "UTC",
        anchor_ms=int(fields.get("anchor") or 0),
    )


# Validation -------------------------------------------------------------------------------------------


def _check_tasks(
    raw_tasks: list[Any], settings: Settings, webhook_check: WebhookCheck | None
) -> list[FieldError]:
    """Each task as a batch item would be checked, its errors named tasks.<index>.<field>."""
    errors: list[FieldError] = []
    if len(raw_tasks) > settings.max_batch_size:
        return [FieldError("tasks", f"a schedule holds 1 to {settings.max_batch_size} tasks")]
    for index, raw in enumerate(raw_tasks):
        checked = validate(parse_task(raw), settings, webhook_check)
        found = checked if isinstance(checked, list) else []
        if isinstance(checked, TaskRequest):
            if checked.run_at_ms is not None:
                found = [
                    FieldError("runAt", "a schedule's tasks take delaySeconds (from each firing), not runAt")
                ]
            elif checked.idempotency_key and len(checked.idempotency_key) > 255 - IDEM_SUFFIX_CHARS:
                found = [
                    FieldError(
                        "idempotencyKey",
                        f"at most {255 - IDEM_SUFFIX_CHARS} characters in a "
                        "schedule (each firing appends its time)",
                    )
                ]
        errors += [FieldError(f"tasks.{index}.{e.field}", e.message) for e in found]
    return errors


def _checked_fields(
    raw: object, settings: Settings, webhook_check: WebhookCheck | None, *, creating: bool
) -> ScheduleFields:
    parsed = parse_schedule(raw)
    errors = parsed if isinstance(parsed, list) else []
    if isinstance(parsed, ScheduleFields):
        if creating:
            errors += [FieldError(f, "is required") for f in ("name", "tasks") if getattr(parsed, f) is None]
            if parsed.cron is None and parsed.everySeconds is None:
                errors.append(FieldError("cron", "give cron or everySeconds"))
        if parsed.cron is not None and parsed.everySeconds is not None:
            errors.append(FieldError("everySeconds", "give cron or everySeconds, not both"))
        timezone = parsed.timezone or "UTC"
        try:
            zone(timezone)
        except BadRecurrence as exc:
            errors.append(FieldError("timezone", str(exc)))
            timezone = "UTC"
        try:
            if parsed.cron is not None:
                check_cron(parsed.cron, timezone)
        except BadRecurrence as exc:
            errors.append(FieldError("cron", str(exc)))
        if parsed.tasks is not None:
            errors += _check_tasks(parsed.tasks, settings, webhook_check)
        hook = parsed.batch_webhook_url
        if hook and webhook_check is not None and (problem := webhook_check(hook)):
            errors.append(FieldError("batchWebhook", problem))
    if errors:
        raise ValidationFailed("Invalid schedule", [e.to_json() for e in errors])
    assert isinstance(parsed, ScheduleFields)
    return parsed


# Reads ------------------------------------------------------------------------------------------------


def _fields(store: Store, org: Org, schedule_id: str) -> dict[str, str]:
    values = store.client.hmget(org.shard.sched(schedule_id), VIEW_FIELDS) if _is_id(schedule_id) else []
    fields = {name: v for name, v in zip(VIEW_FIELDS, values, strict=False) if v is not None}
    if fields.get("org") != org.id:
        raise NotFound(f"Schedule {schedule_id} not found", {"id": schedule_id})
    return fields


def view(schedule_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A schedule as the API shows it (without its tasks and runs)."""
    every = fields.get("every")
    paused = fields.get("paused") == "1"
    hook = fields.get("hook")
    last = fields.get("last")
    return {
        "id": schedule_id,
        "name": fields.get("name"),
        "cron": fields.get("cron") or None,
        "everySeconds": int(every) // 1000 if every else None,
        "timezone": fields.get("tz") or "UTC",
        "paused": paused,
        "nextRunAt": None if paused or not fields.get("next") else iso_ms(int(fields["next"])),
        "firing": bool(fields.get("firing")),
        "taskCount": int(fields.get("count") or 0),
        "batchWebhook": {"url": hook} if hook else None,
        "lastRun": json.loads(last) if last else None,
        "createdAt": iso_ms(int(fields.get("created") or 0)),
        "updatedAt": iso_ms(int(fields.get("updated") or 0)),
    }


def get(store: Store, org: Org, schedule_id: str) -> dict[str, Any]:
    """One schedule with its tasks and its recent runs (newest first)."""
    fields = _fields(store, org, schedule_id)
    pipe = store.client.pipeline(transaction=False)
    pipe.hget(org.shard.sched(schedule_id), "tasks")
    pipe.lrange(org.shard.sched_runs(schedule_id), 0, RUNS_KEPT - 1)
    tasks, runs = pipe.execute()
    return {
        **view(schedule_id, fields),
        "tasks": json.loads(tasks or "[]"),
        "runs": [json.loads(r) for r in runs],
    }


def list_for(store: Store, org: Org) -> list[dict[str, Any]]:
    """The organization's schedules, by name."""
    ids = sorted(store.client.smembers(org.shard.org_scheds(org.id)))
    return sorted(_views(store, org.shard, ids), key=lambda v: (v["name"] or "", v["id"]))


def _views(store: Store, shard: Shard, ids: Sequence[str]) -> list[dict[str, Any]]:
    pipe = store.client.pipeline(transaction=False)
    for schedule_id in ids:
        pipe.hmget(shard.sched(schedule_id), VIEW_FIELDS)
    rows = pipe.execute() if ids else []
    out = []
    for schedule_id, values in zip(ids, rows, strict=True):
        fields = {name: v for name, v in zip(VIEW_FIELDS, values, strict=True) if v is not None}
        if fields.get("org"):
            out.append({**view(schedule_id, fields), "org": fields["org"]})
    return out


def overview(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """Every organization's schedules (up to `limit`), soonest next run first: the dashboard's and the
    CLI's list."""
    orgs = sorted(store.client.smembers(keys.ORGS))
    pipe = store.client.pipeline(transaction=False)
    for org_id in orgs:
        pipe.smembers(store.org(org_id).shard.org_scheds(org_id))
    by_shard: dict[int, list[str]] = {}
    for org_id, ids in zip(orgs, pipe.execute() if orgs else [], strict=True):
        by_shard.setdefault(store.org(org_id).shard.index, []).extend(sorted(ids))
    rows = [row for index, ids in by_shard.items() for row in _views(store, Shard(index), ids)]
    rows.sort(key=lambda v: (v["nextRunAt"] is None, v["nextRunAt"] or "", v["id"]))
    return rows[:limit]


def find(store: Store, schedule_id: str) -> Org:
    """The organization a schedule belongs to, whatever its shard (operator tools)."""
    if _is_id(schedule_id):
        for index in range(store.shards):
            org_id = store.client.hget(Shard(index).sched(schedule_id), "org")
            if org_id:
                return store.org(org_id)
    raise NotFound(f"Schedule {schedule_id} not found", {"id": schedule_id})


# Writes -----------------------------------------------------------------------------------------------


def _save(
    store: Store, org: Org, schedule_id: str, mode: str, next_at: int, paused: bool, fields: dict[str, Any]
) -> bool:
    shard = org.shard
    pairs = [str(x) for item in fields.items() for x in item]
    done = store.scripts["sched_save"](
        keys=[shard.sched(schedule_id), shard.scheds, shard.org_scheds(org.id)],
        args=[schedule_id, org.id, mode, next_at, "1" if paused else "0", *pairs],
    )
    store.client.publish(keys.SCHEDULES_CHANGED, schedule_id)  # idle schedule loops re-read T:scheds
    return bool(done)


def create(
    store: Store, settings: Settings, org: Org, raw: object, webhook_check: WebhookCheck | None = None
) -> dict[str, Any]:
    """POST /v1/async/schedules: validate, store, and return the new schedule."""
    spec = _checked_fields(raw, settings, webhook_check, creating=True)
    assert spec.tasks is not None
    now = now_ms()
    schedule_id = str(uuid.uuid4())
    fields: dict[str, Any] = {
        "name": spec.name,
        "cron": spec.cron or "",
        "every": (spec.everySeconds or 0) * 1000 or "",
        "tz": spec.timezone or "UTC",
        "anchor": now,
        "tasks": json.dumps(spec.tasks),
        "count": len(spec.tasks),
        "hook": spec.batch_webhook_url or "",
        "created": now,
        "updated": now,
        "firing": "",
        "until": "",
    }
    next_at = recurrence({k: str(v) for k, v in fields.items()}).after(now)
    _save(store, org, schedule_id, "create", next_at, bool(spec.paused), fields)
    return view(
        schedule_id,
        {
            **{k: str(v) for k, v in fields.items()},
            "next": str(next_at),
            "paused": "1" if spec.paused else "0",
            "org": org.id,
        },
    )


def update(
    store: Store,
    settings: Settings,
    org: Org,
    schedule_id: str,
    raw: object,
    webhook_check: WebhookCheck | None = None,
) -> dict[str, Any]:
    """PATCH: change any field; pause or resume. A new timing (or a resume) counts from now: no
    occurrence missed while paused is fired."""
    current = _fields(store, org, schedule_id)
    spec = _checked_fields(raw, settings, webhook_check, creating=False)
    given = spec.model_fields_set
    now = now_ms()
    fields: dict[str, Any] = {"updated": now}
    if spec.name is not None:
        fields["name"] = spec.name
    if spec.cron is not None:
        fields.update(cron=spec.cron, every="")
    if spec.everySeconds is not None:
        fields.update(every=spec.everySeconds * 1000, cron="", anchor=now)
    if spec.timezone is not None:
        fields["tz"] = spec.timezone
    if spec.tasks is not None:
        fields.update(tasks=json.dumps(spec.tasks), count=len(spec.tasks))
    if "batchWebhook" in given:
        fields["hook"] = spec.batch_webhook_url or ""
    paused = spec.paused if spec.paused is not None else current.get("paused") == "1"
    merged = {**current, **{k: str(v) for k, v in fields.items()}}
    retimed = any(k in fields for k in ("cron", "every", "tz")) or (
        current.get("paused") == "1" and not paused
    )
    next_at = recurrence(merged).after(now) if retimed or not current.get("next") else int(current["next"])
    if not _save(store, org, schedule_id, "update", next_at, paused, fields):
        raise NotFound(f"Schedule {schedule_id} not found", {"id": schedule_id})
    return view(schedule_id, {**merged, "next": str(next_at), "paused": "1" if paused else "0"})


def set_paused(store: Store, settings: Settings, org: Org, schedule_id: str, paused: bool) -> dict[str, Any]:
    return update(store, settings, org, schedule_id, {"paused": paused})


def delete(store: Store, org: Org, schedule_id: str) -> None:
    _fields(store, org, schedule_id)
    shard = org.shard
    done = store.scripts["sched_delete"](
        keys=[
            shard.sched(schedule_id),
            shard.sched_runs(schedule_id),
            shard.scheds,
            shard.org_scheds(org.id),
        ],
        args=[schedule_id, org.id],
    )
    if not done:
        raise NotFound(f"Schedule {schedule_id} not found", {"id": schedule_id})


# Firing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A firing this worker claimed: which occurrence, under which token, of what."""

    schedule_id: str
    occurrence: int
    token: str
    org: str
    tasks_json: str
    hook: str
    rev: str
    timing: Recurrence


def claim(store: Store, shard: Shard, schedule_id: str, now: int) -> Claim | None:
    """Claim the schedule's due occurrence, or the firing another worker left unrecorded; None when
    there is nothing for this worker to fire."""
    values = store.client.hmget(shard.sched(schedule_id), TIMING_FIELDS)
    fields = {name: v for name, v in zip(TIMING_FIELDS, values, strict=True) if v is not None}
    expected = fields.get("next", "")
    occurrence = 0
    if fields.get("firing") and int(fields.get("until") or 0) > now:
        return None  # under way elsewhere
    if not fields.get("firing") and fields.get("org"):
        if fields.get("paused") == "1" or not expected or int(expected) > now:
            return None
        latest = recurrence(fields).latest(now)
        occurrence = max(int(expected), latest or 0)  # the latest occurrence due: never a burst
    reply = store.scripts["sched_claim"](
        keys=[shard.sched(schedule_id), shard.scheds],
        args=[schedule_id, now, now + FIRING_LEASE_MS, expected, occurrence],
    )
    if not reply:
        return None
    occ, token, org, tasks, hook, rev, cron, every, tz, anchor = (str(x) for x in reply)
    timing = recurrence({"cron": cron, "every": every, "tz": tz, "anchor": anchor})
    return Claim(schedule_id, int(occ), token, org, tasks, hook, rev, timing)


def _items(claim: Claim, settings: Settings) -> list[TaskRequest | list[FieldError]]:
    """The schedule's tasks as batch items, validated again (this server's providers), with their
    idempotency keys made per occurrence."""
    suffix = ":" + iso_ms(claim.occurrence)
    items: list[TaskRequest | list[FieldError]] = []
    for raw in json.loads(claim.tasks_json):
        item = validate(parse_task(raw), settings)
        if isinstance(item, TaskRequest) and item.idempotency_key:
            item = dataclasses.replace(item, idempotency_key=item.idempotency_key + suffix)
        items.append(item)
    return items


def _admit(store: Store, settings: Settings, claim: Claim, now: int) -> dict[str, Any]:
    """Admit the occurrence's batch (once: its batch id admits once); the run to record."""
    batch_id = firing_batch_id(claim.schedule_id, claim.occurrence)
    run: dict[str, Any] = {"at": iso_ms(claim.occurrence), "firedAt": iso_ms(now), "batchId": batch_id}
    items = _items(claim, settings)
    org = store.org(claim.org)
    try:
        outcomes = admit(store, settings, org, items, batch_id=batch_id, batch_webhook=claim.hook)
    except AlreadyExists:  # admitted by a worker that died before recording it: read the batch
        total, admitted = store.client.hmget(org.shard.batch(batch_id), ["total", "admitted"])
        return run | {"admitted": int(admitted or 0), "refused": int(total or 0) - int(admitted or 0)}
    except (QueueLimitExceeded, TaskqError) as exc:
        error = {"code": exc.code.value, "message": exc.message}
        return run | {"batchId": None, "admitted": 0, "refused": len(items), "error": error}
    refusals: dict[str, int] = {}
    for outcome in outcomes:
        if not isinstance(outcome, Accepted):
            refusals[outcome.error.code.value] = refusals.get(outcome.error.code.value, 0) + 1
    run |= {"admitted": len(outcomes) - sum(refusals.values()), "refused": sum(refusals.values())}
    return run | ({"refusals": refusals} if refusals else {})


def record(store: Store, shard: Shard, claim: Claim, run: dict[str, Any]) -> bool:
    """Store the run and move the schedule on; False when the claim was taken over meanwhile."""
    next_at = claim.timing.after(claim.occurrence)
    done = store.scripts["sched_record"](
        keys=[shard.sched(claim.schedule_id), shard.sched_runs(claim.schedule_id), shard.scheds],
        args=[
            claim.schedule_id,
            claim.token,
            json.dumps(run, separators=(",", ":")),
            next_at,
            claim.rev,
            RUNS_KEPT,
        ],
    )
    return bool(done)


def fire(
    store: Store, settings: Settings, shard: Shard, schedule_id: str, now: int | None = None
) -> dict[str, Any] | None:
    """Fire the schedule's due occurrence if this worker wins its claim; the run, or None."""
    at = now_ms() if now is None else now
    claimed = claim(store, shard, schedule_id, at)
    if claimed is None:
        return None
    run = _admit(store, settings, claimed, at)
    return run if record(store, shard, claimed, run) else None


def _heads(store: Store, limit: int) -> list[tuple[Shard, list[tuple[str, float]]]]:
    """The first `limit` entries of every shard's T:scheds, in one round trip."""
    shards = [Shard(i) for i in range(store.shards)]
    pipe = store.client.pipeline(transaction=False)
    for shard in shards:
        pipe.zrange(shard.scheds, 0, limit - 1, withscores=True)
    return list(zip(shards, pipe.execute(), strict=True))


def fire_due(
    store: Store, settings: Settings, now: int | None = None, limit: int = 16
) -> tuple[list[dict[str, Any]], int | None]:
    """Fire what is due in every shard (up to `limit` schedules per shard); return the runs this worker
    fired and when to look again: the earliest fire time left (ms), or None when no schedule will fire.

    One round trip when nothing is due. A schedule still due after its firing was tried (another
    worker holds its claim and is still recording it) is looked at again RETRY_MS later.
    """
    at = now_ms() if now is None else now
    runs: list[dict[str, Any]] = []
    tried: set[str] = set()
    heads = _heads(store, limit)
    for shard, head in heads:
        for member, score in head:
            if score <= at:
                tried.add(str(member))
                run = fire(store, settings, shard, str(member), at)
                if run is not None:
                    runs.append(run)
    if tried:
        heads = _heads(store, limit)
    wake: int | None = None
    for _, head in heads:
        for member, score in head:
            when = int(score)
            if when <= at and str(member) in tried:
                when = at + RETRY_MS
            wake = when if wake is None else min(wake, when)
    return runs, wake


def _is_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False
