"""Organizations, API keys, credits and task records in Redis: everything but queue transitions."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from taskq import keys
from taskq.errors import InvalidApiKeyFormat, MissingApiKey, NotFound, Unauthorized
from taskq.keys import TASK_FIELDS, Shard, shard_of
from taskq.redistypes import AsyncPipeline, Pipeline, Redis
from taskq.schemas.tasks import TaskRecord
from taskq.scripts import Scripts
from taskq.webhooks.signing import active_secrets, generate_secret

API_KEY_RE = re.compile(r"^sk_live_[0-9a-f]{32}$")
PRIORITIES = range(10, 0, -1)


def task_fields(values: list[str | None]) -> dict[str, str]:
    """A task hash as an HMGET of TASK_FIELDS returns it: absent fields left out, {} for no task. (The
    hash also holds the task's first webhook delivery, which a task view does not need.)"""
    return {name: value for name, value in zip(TASK_FIELDS, values, strict=True) if value is not None}


def now_ms() -> int:
    return int(time.time() * 1000)


def key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def header_digest(header: str | None) -> str:
    """The digest of the API key in an Authorization header; Unauthorized when missing or malformed."""
    if not header:
        raise MissingApiKey("Missing API key: send `Authorization: Bearer <key>`")
    if not header.startswith("Bearer "):
        raise MissingApiKey(
            "Missing API key: the Authorization header has no Bearer scheme; "
            "use `Authorization: Bearer <key>`"
        )
    api_key = header[len("Bearer ") :].strip()
    if not API_KEY_RE.match(api_key):
        raise InvalidApiKeyFormat("Invalid API key format: expected sk_live_ followed by 32 hex characters")
    return key_digest(api_key)


def queue_key_lookup(
    pipe: Pipeline | AsyncPipeline, digest: str, count_key: str | None, requests: int = 1
) -> None:
    """Queue the lookup of an API key digest and, with count_key, the count of this request (of these
    `requests`) in its per-second rate window (``Store.resolve_key``; ``Store.key_found`` reads the
    replies: the key record, the window's count, the EXPIRE's)."""
    pipe.execute_command("GET", keys.api_key(digest))
    if count_key is not None:
        pipe.execute_command("INCRBY", count_key, requests)
        pipe.execute_command("EXPIRE", count_key, 2)


def new_api_key() -> str:
    return "sk_live_" + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class Org:
    id: str
    shard: Shard


class Store:
    """Reads and writes of org and task records; one instance per process, shared by requests."""

    def __init__(self, client: Redis, shards: int = 1) -> None:
        self.client = client
        self.shards = shards
        self.scripts = Scripts(client)

    # Organizations -------------------------------------------------------------------------------
    def org(self, org_id: str) -> Org:
        return Org(org_id, Shard(shard_of(org_id, self.shards)))

    def create_org(
        self, name: str, *, credits: int, concurrency: int, queue_limit: int, per_cycle: int | None = None
    ) -> tuple[str, str]:
        """Create an organization with one API key and one webhook secret; return (org id, api key)."""
        org_id = "org_" + uuid.uuid4().hex[:16]
        org = self.org(org_id)
        fields: dict[str, Any] = {
            "name": name,
            "credits": credits,
            "reserved": 0,
            "queued": 0,
            "inflight": 0,
            "concurrency": concurrency,
            "queue_limit": queue_limit,
            "created": now_ms(),
            "wh_secrets": json.dumps([{"secret": generate_secret(), "expires": None}]),
        }
        if per_cycle is not None:
            fields["per_cycle"] = per_cycle
        self.client.hset(org.shard.org(org_id), mapping=fields)
        self.client.sadd(keys.ORGS, org_id)
        return org_id, self.create_key(org_id)

    def org_exists(self, org_id: str) -> bool:
        return bool(self.client.exists(self.org(org_id).shard.org(org_id)))

    def org_fields(self, org_id: str) -> dict[str, str]:
        fields: dict[str, str] = self.client.hgetall(self.org(org_id).shard.org(org_id))
        if not fields:
            raise NotFound(f"organization {org_id} not found", {"id": org_id})
        return fields

    def update_org(self, org_id: str, **fields: int) -> None:
        self.org_fields(org_id)
        self.client.hset(self.org(org_id).shard.org(org_id), mapping=fields)

    def add_credits(self, org_id: str, amount: int) -> int:
        self.org_fields(org_id)
        return int(self.client.hincrby(self.org(org_id).shard.org(org_id), "credits", amount))

    def list_orgs(self) -> list[str]:
        return sorted(self.client.smembers(keys.ORGS))

    def webhook_secrets(self, org_id: str, at_ms: int | None = None) -> list[str]:
        """The org's active webhook secrets, newest first (two during a rotation overlap)."""
        raw = self.client.hget(self.org(org_id).shard.org(org_id), "wh_secrets")
        return active_secrets(raw, at_ms if at_ms is not None else now_ms())

    def rotate_webhook_secret(self, org_id: str, overlap_seconds: int) -> str:
        """Make a new secret current; the old ones stay valid for overlap_seconds."""
        key = self.org(org_id).shard.org(org_id)
        self.org_fields(org_id)
        entries = json.loads(self.client.hget(key, "wh_secrets") or "[]")
        now = now_ms()
        expires = now + overlap_seconds * 1000
        kept = [
            {"secret": e["secret"], "expires": min(e["expires"] or expires, expires)}
            for e in entries
            if e["expires"] is None or e["expires"] > now
        ]
        secret = generate_secret()
        self.client.hset(key, "wh_secrets", json.dumps([{"secret": secret, "expires": None}, *kept]))
        return secret

    # API keys ------------------------------------------------------------------------------------
    def create_key(self, org_id: str) -> str:
        api_key = new_api_key()
        digest = key_digest(api_key)
        self.client.set(keys.api_key(digest), json.dumps({"org": org_id, "digest": digest}))
        self.client.sadd(keys.org_meta(org_id) + ":keys", digest)
        return api_key

    def revoke_key(self, api_key: str) -> bool:
        digest = key_digest(api_key)
        raw = self.client.get(keys.api_key(digest))
        if raw is None:
            return False
        self.client.delete(keys.api_key(digest))
        self.client.srem(keys.org_meta(json.loads(raw)["org"]) + ":keys", digest)
        return True

    def authenticate(self, header: str | None) -> tuple[Org, str]:
        """Resolve an Authorization header to (org, key digest) or raise Unauthorized."""
        digest = header_digest(header)
        org, _ = self.resolve_key(digest)
        return org, digest

    def resolve_key(self, digest: str, *, count_key: str | None = None) -> tuple[Org, int]:
        """The org of an API key digest (Unauthorized if unknown or revoked); with count_key, also count
        this request there (a per-second rate window), in the same round trip."""
        pipe = self.client.pipeline(transaction=False)
        queue_key_lookup(pipe, digest, count_key)
        return self.key_found(pipe.execute(), digest)

    def key_found(self, replies: list[Any], digest: str) -> tuple[Org, int]:
        """Read the replies of ``queue_key_lookup`` (sent on any client, sync or asyncio)."""
        record = json.loads(replies[0]) if replies[0] else {"org": "", "digest": "0" * 64}
        if not hmac.compare_digest(record["digest"], digest) or not record["org"]:
            raise Unauthorized("Invalid or expired API key")
        return self.org(record["org"]), int(replies[1]) if len(replies) > 1 else 0

    # Tasks ---------------------------------------------------------------------------------------
    def task(self, org: Org, task_id: str) -> TaskRecord:
        """One task of this organization; another organization's task is NotFound like a missing one."""
        fields = (
            task_fields(self.client.hmget(org.shard.task(task_id), TASK_FIELDS)) if _is_uuid(task_id) else {}
        )
        if not fields or fields.get("org") != org.id:
            raise NotFound(f"Task {task_id} not found", {"id": task_id})
        return TaskRecord.from_hash(task_id, fields)

    def status(self, org: Org) -> dict[str, Any]:
        """GET /v1/async/status for one organization. Synchronous calls waiting for a worker (q11) are
        not queued tasks, but they hold concurrency slots."""
        names = ["queued", "inflight", "concurrency", "q11"] + [f"q{p}" for p in PRIORITIES]
        values = self.client.hmget(org.shard.org(org.id), names)
        counts = dict(zip(names, (int(v or 0) for v in values), strict=True))
        return {
            "queuedTasks": counts["queued"] - counts["q11"],
            "processingTasks": counts["inflight"],
            "priorityBreakdown": [
                {"priority": p, "count": counts[f"q{p}"]} for p in PRIORITIES if counts[f"q{p}"] > 0
            ],
            "concurrency": {"used": counts["inflight"] + counts["q11"], "max": counts["concurrency"]},
        }

    def credits(self, org: Org) -> dict[str, Any]:
        """GET /v1/credits: the balance less what queued and running tasks have reserved."""
        credits, reserved, per_cycle, resets = self.client.hmget(
            org.shard.org(org.id), ["credits", "reserved", "per_cycle", "cycle_resets"]
        )
        return {
            "remaining": int(credits or 0) - int(reserved or 0),
            "perCycle": int(per_cycle) if per_cycle else None,
            "cycleResetsAt": resets or None,
        }


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False
