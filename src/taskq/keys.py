"""Every Redis key name taskq uses, for Python and (through a generated preamble) for the Lua scripts.

Work is spread over shards. Every key of one shard carries the shard's hash tag, ``tq:{sN}:``, so each
Lua call touches one Redis Cluster slot (DESIGN decision 8). An organization lives in exactly one shard:
its queues, tasks, idempotency keys and counters. Only the API-key lookup and the organization registry
are global, and they are read with single-key commands.

Per-shard keys (``T`` = the shard tag):

====================  =======  ============================================================
T:org:<org>           HASH     credits, reserved, limits, queued/inflight counters, q1..q10
T:t:<id>              HASH     the task record (fields: see TASK_FIELDS) and its first webhook
                               delivery (DELIVERY_FIELDS, each prefixed "d_"; see delivery_record);
                               ATTEMPT_LOG: JSON lines of the attempts that did not end the task
T:lane:<org>:<type>   ZSET     queued task ids of one org and task type; score = lane score
T:ready:<type>        ZSET     orgs with queued tasks of <type>; score = band * 2^40 + turn
T:turn                HASH     org -> its current round-robin turn
T:capped              SET      orgs parked at their concurrency limit
T:pinflight           HASH     task type -> calls in flight
T:proc                ZSET     leased task ids; score = lease deadline (ms)
T:delayed             ZSET     task ids waiting to retry, or delayed (runAt); score = due time (ms)
T:idem:<org>:<key>    STRING   idempotency key -> task id
T:org:<org>:types     SET      task types with a non-empty lane of the org (what a re-index touches)
T:org:<org>:tasks     LIST     the org's task ids in arrival order, for listing; entry i has the
                               absolute position list_base + i (list_base: org hash field, the
                               number of expired entries trimmed from the head)
T:b:<id>              HASH     one batch: org, created, total, admitted, per-status counts, charged, finished
T:b:<id>:ids          LIST     the batch's task ids by input index ("" where a task was rejected)
T:seq / T:rr / T:fence STRING  counters: arrival order, round-robin turns, fencing tokens
T:wake                LIST     wake-up tokens for idle workers
T:wh:due              ZSET     webhook deliveries waiting; score = next attempt (ms)
T:wh:proc             ZSET     webhook deliveries being sent; score = lease deadline (ms)
T:wh:<id>             HASH     any other webhook delivery (a redelivery, a batch event): DELIVERY_FIELDS
T:t:<id>:wh           LIST     delivery ids of one task, oldest first (redeliveries append)
T:metrics             HASH     counters for /metrics (fields: see taskq.metrics; the latency histogram's
                               bucket i counts calls of at most LATENCY_BUCKETS_MS[i] ms)
T:stats:<minute>      HASH     admitted/completed/failed in one minute (expires after 2 h)
T:wh:failing          HASH     webhook host -> failed attempts in the last hour (expires hourly)
T:failures            LIST     the latest failed tasks as JSON {id, org, type, code, message, at}
T:reaper              STRING   short SET NX PX lock: one lease reaper per shard at a time
T:sweeper             STRING   SET NX PX lock: one listing trim per shard per minute
T:reply:<id>          LIST     the outcome of a synchronous call admitted without an inbox (its
                               status), pushed when the task finishes (expires soon after)
T:inbox:<id>          LIST     the outcomes of the synchronous calls one intake process admitted:
                               "<task id>\n<status>\n<result or error>", pushed when each finishes;
                               the process's one reader pops them (expires soon after the last push)
T:collect             ZSET     synchronous calls that completed and wait for their intake to collect
                               the answer, which charges them; score = when they are refunded instead (ms)
T:sched:<id>          HASH     a recurring schedule: org, name, timing, tasks, next fire time, the firing
                               under way (see taskq.schedules)
T:sched:<id>:runs     LIST     the schedule's recent firings as JSON, newest first
T:scheds              ZSET     schedule ids that will fire; score = next fire time (ms), or the end of
                               a firing's claim while one is under way
T:org:<org>:scheds    SET      the org's schedule ids
T:flow                HASH     provider flow control (taskq.flow): per lane "<TYPE>:<field>" and per
                               key of a lane "<TYPE>/<key fingerprint>:<field>" (see FLOW_FIELDS)
====================  =======  ============================================================
"""

from __future__ import annotations

import re
import zlib

PREFIX = "tq"

#: Per-shard key templates. ``{tag}`` is the shard tag; other fields are arguments.
TEMPLATES: dict[str, str] = {
    "org": "{tag}:org:{org}",
    "task": "{tag}:t:{id}",
    "lane": "{tag}:lane:{org}:{type}",
    "ready": "{tag}:ready:{type}",
    "idem": "{tag}:idem:{org}:{key}",
    "org_tasks": "{tag}:org:{org}:tasks",
    "org_types": "{tag}:org:{org}:types",
    "batch": "{tag}:b:{id}",
    "batch_ids": "{tag}:b:{id}:ids",
    "delivery": "{tag}:wh:{id}",
    "task_deliveries": "{tag}:t:{id}:wh",
    "turn": "{tag}:turn",
    "capped": "{tag}:capped",
    "pinflight": "{tag}:pinflight",
    "proc": "{tag}:proc",
    "delayed": "{tag}:delayed",
    "seq": "{tag}:seq",
    "rr": "{tag}:rr",
    "fence": "{tag}:fence",
    "wake": "{tag}:wake",
    "wh_due": "{tag}:wh:due",
    "wh_proc": "{tag}:wh:proc",
    "metrics": "{tag}:metrics",
    "stats": "{tag}:stats:{minute}",
    "failures": "{tag}:failures",
    "wh_failing": "{tag}:wh:failing",
    "reaper": "{tag}:reaper",
    "sweeper": "{tag}:sweeper",
    "reply": "{tag}:reply:{id}",
    "inbox": "{tag}:inbox:{id}",
    "collect": "{tag}:collect",
    "sched": "{tag}:sched:{id}",
    "sched_runs": "{tag}:sched:{id}:runs",
    "scheds": "{tag}:scheds",
    "org_scheds": "{tag}:org:{org}:scheds",
    "flow": "{tag}:flow",
}

#: Global keys (single-key access only).
API_KEY = PREFIX + ":apikey:{digest}"
ORGS = PREFIX + ":orgs"
ORG_META = PREFIX + ":orgmeta:{org}"
STACK_ORG = PREFIX + ":stack:org"
RATE = PREFIX + ":rl:{digest}:{endpoint}:{window}"
#: Pub/sub channel: a schedule was created or changed (its next fire time may be earlier than the
#: time idle schedule loops wait for).
SCHEDULES_CHANGED = PREFIX + ":scheds:changed"
#: worker process name -> JSON {host, pid, inflight, claimed, heartbeat ms}; written by each drain loop
WORKERS = PREFIX + ":workers"
#: a counter each group commit increments right before its WAITAOF: the write whose replication offset
#: the commit waits for, which covers every write answered before it (taskq.durability)
COMMIT_MARK = PREFIX + ":commit"

#: Fields of the task hash.
TASK_FIELDS = (
    "org type status prio created payload idem webhook cost charged attempts token score started "
    "finished result error batch delivered wh_state wh_last wh_attempts wh_list due"
).split()


#: Fields of T:flow, each prefixed "<TYPE>/<fingerprint>:" (one API key of a lane: a slot). tat: the
#: rate limiter's next free time (GCRA, ms); pause/why: paused until (ms) and why; quota: "1" while the
#: key's quota is exhausted (pause is then the next probe); auth: "1" once the key was refused (401/403);
#: lrate/lset/lcap: the learned rate (calls/s), when it last dropped (ms), the limit the provider stated;
#: ss: when slow start began (ms); calls/n429: counts; w/wn/pn: calls in this second and the one before;
#: rate/burst/seen: the configured limit and when a worker last said so. Lane fields ("<TYPE>:"):
#: pause/why, an operator's pause.
FLOW_FIELDS = "tat pause why quota auth lrate lset lcap ss calls n429 w wn pn rate burst seen".split()
#: Upper bounds (ms) of the provider latency histogram in T:metrics ("lat:<TYPE>:<i>": calls of at most
#: LATENCY_BUCKETS_MS[i] ms, the last index for slower ones); the scripts get them as LAT_BUCKETS.
LATENCY_BUCKETS_MS = (100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000)
#: Field of the task hash logging each attempt that did not end the task (retry.lua, reap.lua).
ATTEMPT_LOG = "alog"

#: Fields of a webhook delivery record; ``log`` holds one JSON line per attempt, newline-separated;
#: ``body`` is absent until the first attempt for an event whose body is built when first sent (a
#: canceled task's, from its task; batch.completed, from the batch named by ``batch``).
DELIVERY_FIELDS = "task org url event body attempts state created next finished log batch".split()
#: A task's first delivery (the one its completion queues) is stored in the task hash, its fields
#: prefixed with EMBEDDED_PREFIX, under the delivery id FIRST_DELIVERY + task id: completing a task
#: and recording its delivery then touch one key, which expires with the task.
FIRST_DELIVERY = "t_"
EMBEDDED_PREFIX = "d_"


def first_delivery(task_id: str) -> str:
    """The delivery id of a task's first webhook delivery."""
    return FIRST_DELIVERY + task_id


def shard_of(org_id: str, shards: int) -> int:
    """The shard an organization lives in (stable for a fixed shard count)."""
    return zlib.crc32(org_id.encode()) % shards


class _Key:
    """A key of the shard that takes no argument (T:proc, T:wh:due...): a typed attribute, so a
    misspelt name fails mypy; built from its template on first read, then kept on the instance."""

    def __set_name__(self, owner: type, name: str) -> None:
        if name not in TEMPLATES or _params(TEMPLATES[name]) != ["tag"]:
            raise TypeError(f"{name}: not a key template without arguments")
        self.name = name

    def __get__(self, shard: Shard, owner: type | None = None) -> str:
        value = shard._k(self.name)
        shard.__dict__[self.name] = value  # a non-data descriptor: later reads find it directly
        return value


def _params(template: str) -> list[str]:
    return re.findall(r"{(\w+)}", template)


class Shard:
    """Key names of one shard."""

    turn = _Key()
    capped = _Key()
    pinflight = _Key()
    proc = _Key()
    delayed = _Key()
    seq = _Key()
    rr = _Key()
    fence = _Key()
    wake = _Key()
    wh_due = _Key()
    wh_proc = _Key()
    metrics = _Key()
    failures = _Key()
    wh_failing = _Key()
    reaper = _Key()
    sweeper = _Key()
    scheds = _Key()
    flow = _Key()
    collect = _Key()

    def __init__(self, index: int) -> None:
        self.index = index
        self.tag = f"{PREFIX}:{{s{index}}}"

    def _k(self, name: str, **parts: str) -> str:
        return TEMPLATES[name].format(tag=self.tag, **parts)

    def org(self, org: str) -> str:
        return self._k("org", org=org)

    def task(self, task_id: str) -> str:
        return self._k("task", id=task_id)

    def lane(self, org: str, task_type: str) -> str:
        return self._k("lane", org=org, type=task_type)

    def ready(self, task_type: str) -> str:
        return self._k("ready", type=task_type)

    def idem(self, org: str, key: str) -> str:
        return self._k("idem", org=org, key=key)

    def org_tasks(self, org: str) -> str:
        return self._k("org_tasks", org=org)

    def batch(self, batch_id: str) -> str:
        return self._k("batch", id=batch_id)

    def batch_ids(self, batch_id: str) -> str:
        return self._k("batch_ids", id=batch_id)

    def stats(self, minute: int) -> str:
        return self._k("stats", minute=str(minute))

    def delivery(self, delivery_id: str) -> str:
        return self._k("delivery", id=delivery_id)

    def delivery_record(self, delivery_id: str) -> tuple[str, str]:
        """Where a delivery's record lives: (hash key, prefix of its field names)."""
        if delivery_id.startswith(FIRST_DELIVERY):
            return self.task(delivery_id.removeprefix(FIRST_DELIVERY)), EMBEDDED_PREFIX
        return self.delivery(delivery_id), ""

    def reply(self, task_id: str) -> str:
        return self._k("reply", id=task_id)

    def inbox(self, inbox_id: str) -> str:
        return self._k("inbox", id=inbox_id)

    def task_deliveries(self, task_id: str) -> str:
        return self._k("task_deliveries", id=task_id)

    def sched(self, schedule_id: str) -> str:
        return self._k("sched", id=schedule_id)

    def sched_runs(self, schedule_id: str) -> str:
        return self._k("sched_runs", id=schedule_id)

    def org_scheds(self, org: str) -> str:
        return self._k("org_scheds", org=org)


def api_key(digest: str) -> str:
    return API_KEY.format(digest=digest)


def rate(digest: str, endpoint: str, window: int) -> str:
    return RATE.format(digest=digest, endpoint=endpoint, window=window)


def org_meta(org: str) -> str:
    return ORG_META.format(org=org)


def lua_preamble(body: str | None = None) -> str:
    """Lua functions ``k_<name>(tag, ...)`` that build the same names as TEMPLATES, and the latency
    histogram's bounds (LAT_BUCKETS), for every script; given the script's ``body``, only the builders
    it calls (Redis makes every local function of a script anew on each call)."""
    first, cut = f'"{FIRST_DELIVERY}"', len(FIRST_DELIVERY)
    tail = [
        "-- Where a delivery's record lives: its hash key and the prefix of its field names.",
        "local function delivery_record(tag, id)",
        f"  if string.sub(id, 1, {cut}) == {first} then",
        f'    return k_task(tag, string.sub(id, {cut + 1})), "{EMBEDDED_PREFIX}"',
        "  end",
        '  return k_delivery(tag, id), ""',
        "end",
        f"local function first_delivery(task) return {first} .. task end",
        "-- Upper bounds (ms) of the latency histogram's buckets (LATENCY_BUCKETS_MS).",
        "local LAT_BUCKETS = {" + ", ".join(str(b) for b in LATENCY_BUCKETS_MS) + "}",
    ]
    used = None if body is None else body + "\n".join(tail)
    lines = ["-- Generated from taskq/keys.py: the only place key names are defined."]
    for name, template in TEMPLATES.items():
        if used is not None and not re.search(rf"\bk_{name}\(", used):
            continue
        params = _params(template)
        pieces = []
        for literal, field in re.findall(r"([^{]*)(?:{(\w+)})?", template):
            if literal:
                pieces.append(repr(literal).replace("'", '"'))
            if field:
                pieces.append(field)
        body_expr = " .. ".join(pieces)
        lines.append(f"local function k_{name}({', '.join(params)}) return {body_expr} end")
    return "\n".join(lines + tail) + "\n"
