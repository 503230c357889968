"""`taskq submit`: send a task file of any size in batches, report rejections by line, optionally wait."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, TextIO

from taskq.ops import OpsError
from taskq.ops.client import ApiClient, ApiError, Unreachable
from taskq.ops.progress import Progress, bar
from taskq.ops.stack import resolve_target
from taskq.ops.taskfile import Entry, TaskFile, describe, open_task_file
from taskq.settings import Settings

ABORT_STATUSES = frozenset({401, 404})  # wrong key or wrong URL: every later batch would fail the same way
POLL_WINDOW = 20  # batches polled per round: the oldest unfinished ones, which the queue serves first
MAX_PRINTED = 50


@dataclass
class Batch:
    """One request's tasks by input position; `id` is None when the whole request was refused."""

    id: str | None
    positions: list[int]
    admitted: int
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    done: bool = False


@dataclass
class Submission:
    source: TaskFile
    ids: list[str]
    rejected: dict[int, dict[str, Any]] = field(default_factory=dict)
    local: deque[int] = field(default_factory=deque)  # positions rejected before sending, in order
    batches: list[Batch] = field(default_factory=list)
    aborted: str | None = None  # why submission stopped early; later positions were never sent

    def reject(self, position: int, error: dict[str, Any]) -> dict[str, Any]:
        self.rejected[position] = error
        return {self.source.label: position, "taskId": None, "status": "REJECTED", "error": error}


def _send(client: ApiClient, sub: Submission, entries: list[Entry]) -> None:
    positions = [e.position for e in entries]
    try:
        body = client.submit_batch([e.task for e in entries])
    except ApiError as exc:
        if exc.status in ABORT_STATUSES:
            raise
        error = {"code": exc.code, "message": exc.message, "details": exc.details}
        sub.batches.append(Batch(None, positions, 0, {p: sub.reject(p, error) for p in positions}, done=True))
        return
    except Unreachable:
        raise
    except OpsError as exc:  # the request may or may not have been admitted: say so, never resend
        error = {"code": "UNKNOWN", "message": f"{exc} (the batch may have been admitted)"}
        sub.batches.append(Batch(None, positions, 0, {p: sub.reject(p, error) for p in positions}, done=True))
        return
    batch = Batch(body["batchId"], positions, int(body["summary"]["succeeded"]))
    for result in body["results"]:
        position = positions[result["index"]]
        if result["success"]:
            sub.ids[sub.source.slot(position)] = result["task"]["id"]
        else:
            batch.records[position] = sub.reject(position, result["error"])
    batch.done = batch.admitted == 0
    sub.batches.append(batch)


def submit_all(client: ApiClient, source: TaskFile, batch_size: int, progress: Progress) -> Submission:
    """Send every task in batches of batch_size, in file order; parse errors are rejected locally."""
    sub = Submission(source, [""] * source.size)
    pending: list[Entry] = []
    seen = 0

    def flush() -> None:
        try:
            _send(client, sub, pending)
        except (Unreachable, ApiError) as exc:
            sub.aborted = f"stopped before {source.label} {pending[0].position}: {exc}"
        pending.clear()
        admitted = sum(b.admitted for b in sub.batches)
        progress.update(
            f"submitting {bar(seen, source.size)} {seen}/{source.size} {source.label}s  "
            f"admitted {admitted}  rejected {len(sub.rejected)}",
            force=True,
        )

    for entry in source.entries():
        if sub.aborted:
            break
        seen += 1
        if entry.error is not None:
            sub.reject(entry.position, entry.error)
            sub.local.append(entry.position)
        elif not entry.blank:
            pending.append(entry)
        if len(pending) >= batch_size:
            flush()
    if pending and not sub.aborted:
        flush()
    admitted = sum(b.admitted for b in sub.batches)
    progress.done(
        f"submitted  {bar(seen, source.size)} {len(sub.batches)} batches  "
        f"admitted {admitted}  rejected {len(sub.rejected)}"
    )
    return sub


def _finish(client: ApiClient, sub: Submission, batch: Batch, missing: str) -> None:
    """Fetch a batch's finished results; admitted tasks without one get status `missing`."""
    label = sub.source.label
    if batch.id is not None:
        for line in client.batch_results(batch.id):
            position = batch.positions[line["index"]]
            batch.records[position] = {
                label: position,
                "taskId": line["taskId"],
                "status": line["task"]["status"],
                "latencyMs": line["task"].get("latencyMs"),
                "response": line.get("response"),
            }
    for position in batch.positions:
        if position not in batch.records:
            task_id = sub.ids[sub.source.slot(position)]
            record = {label: position, "taskId": task_id, "status": missing, "response": None}
            batch.records[position] = record
    batch.done = True


class ResultWriter:
    """Writes records in input order as soon as every earlier batch is finished."""

    def __init__(self, sub: Submission, out: TextIO) -> None:
        self.sub, self.out, self.next = sub, out, 0
        self.statuses: Counter[str] = Counter()
        self.failures: list[str] = []  # the first few FAILED tasks, for the report

    def _emit(self, record: dict[str, Any]) -> None:
        self.statuses[record["status"]] += 1
        if record["status"] == "FAILED" and len(self.failures) < MAX_PRINTED:
            error = (record.get("response") or {}).get("error") or {}
            label = self.sub.source.label
            self.failures.append(f"{label} {record[label]}: FAILED {error.get('code')} {describe(error)}")
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _emit_local(self, before: float) -> None:
        label = self.sub.source.label
        while self.sub.local and self.sub.local[0] < before:
            position = self.sub.local.popleft()
            error = self.sub.rejected[position]
            self._emit({label: position, "taskId": None, "status": "REJECTED", "error": error})

    def flush(self) -> None:
        batches = self.sub.batches
        while self.next < len(batches) and batches[self.next].done:
            batch = batches[self.next]
            for position in sorted(batch.records):
                self._emit_local(position)
                self._emit(batch.records[position])
            batch.records.clear()  # written: keep memory bounded by the unfinished batches
            self.next += 1
        if self.next == len(batches):
            self._emit_local(float("inf"))


def wait_all(client: ApiClient, sub: Submission, writer: ResultWriter, timeout: float | None) -> bool:
    """Poll batch views (2 s, x1.5 while nothing changes, up to 15 s) until done; False on timeout."""
    progress = Progress()
    deadline = time.monotonic() + timeout if timeout else None
    total = sum(b.admitted for b in sub.batches)
    interval = 2.0
    while True:
        changed = False
        for batch in [b for b in sub.batches if not b.done][:POLL_WINDOW]:
            assert batch.id is not None  # refused batches are done from the start
            counts = client.batch(batch.id)["counts"]
            changed |= counts != batch.counts
            batch.counts = counts
            if counts.get("QUEUED", 0) + counts.get("PROCESSING", 0) == 0:
                _finish(client, sub, batch, "EXPIRED")
        writer.flush()
        live = Counter[str]()
        for batch in sub.batches:
            live.update(batch.counts)
        done = live["COMPLETED"] + live["FAILED"] + live["CANCELED"] + live["EXPIRED"]
        status = (
            f"waiting    {bar(done, total)} {done}/{total}  queued {live['QUEUED']}  "
            f"processing {live['PROCESSING']}  completed {live['COMPLETED']}  failed {live['FAILED']}"
        )
        if all(b.done for b in sub.batches):
            progress.done(status)
            return True
        if deadline is not None and time.monotonic() > deadline:
            progress.done(status + "  (timed out)")
            for batch in sub.batches:
                if not batch.done:
                    _finish(client, sub, batch, "PENDING")
            writer.flush()
            return False
        progress.update(status, force=True)
        interval = 2.0 if changed else min(interval * 1.5, 15.0)
        time.sleep(interval)


def _print_rejections(sub: Submission) -> None:
    label = sub.source.label
    for position in sorted(sub.rejected)[:MAX_PRINTED]:
        error = sub.rejected[position]
        print(f"{label} {position}: {error.get('code')} {describe(error)}")
    if len(sub.rejected) > MAX_PRINTED:
        print(f"... and {len(sub.rejected) - MAX_PRINTED} more rejected {label}s")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not 1 <= args.batch_size <= settings.max_batch_size:
        raise OpsError(f"--batch-size must be 1 to {settings.max_batch_size}")
    target = resolve_target(settings, args.url, args.api_key)
    source = open_task_file(args.file)
    ids_out = args.ids_out or f"{args.file}.ids"
    with ApiClient(target.url, target.api_key) as client:
        sub = submit_all(client, source, args.batch_size, Progress())
        with open(ids_out, "w", encoding="utf-8") as out:
            out.writelines(task_id + "\n" for task_id in sub.ids)
        _print_rejections(sub)
        admitted = sum(b.admitted for b in sub.batches)
        print(f"{admitted} admitted, {len(sub.rejected)} rejected; task ids in {ids_out}")
        if sub.aborted:
            raise OpsError(sub.aborted)
        if not args.wait:
            return 0 if not sub.rejected else 1
        results_out = args.results_out or f"{args.file}.results.jsonl"
        with open(results_out, "w", encoding="utf-8") as out:
            writer = ResultWriter(sub, out)
            finished = wait_all(client, sub, writer, args.timeout)
    counts = writer.statuses
    for line in writer.failures:
        print(line)
    if counts["FAILED"] > len(writer.failures):
        print(f"... and {counts['FAILED'] - len(writer.failures)} more failed")
    print(
        f"{counts['COMPLETED']} completed, {counts['FAILED']} failed, {counts['REJECTED']} rejected"
        + ("" if finished else f", {counts['PENDING']} still pending (timed out)")
        + f"; results in {results_out}"
    )
    return 0 if finished and counts["COMPLETED"] == sum(counts.values()) else 1
