"""The local stack's own organization: created once, remembered in Redis, reused by every `taskq up`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from taskq import keys
from taskq.errors import Unauthorized
from taskq.store import Store

CREDITS = 100_000_000  # generous: a dev stack should never stop on credits
TOP_UP_BELOW = 10_000_000


@dataclass(frozen=True, slots=True)
class StackOrg:
    org_id: str
    api_key: str
    webhook_secrets: list[str]
    created: bool


def _remembered(store: Store) -> tuple[str, str] | None:
    """The remembered (org id, key) if the key still authenticates for that org."""
    raw = store.client.get(keys.STACK_ORG)
    if not raw:
        return None
    try:
        record = json.loads(raw)
        org, _ = store.authenticate(f"Bearer {record['apiKey']}")
    except (ValueError, KeyError, TypeError, Unauthorized):
        return None
    if org.id != record.get("orgId") or not store.org_exists(org.id):
        return None
    return org.id, str(record["apiKey"])


def ensure_stack_org(store: Store, *, concurrency: int, queue_limit: int) -> StackOrg:
    """Reuse the stack's organization (topping up its credits) or create it."""
    remembered = _remembered(store)
    if remembered is None:
        org_id, api_key = store.create_org(
            "taskq up (local stack)", credits=CREDITS, concurrency=concurrency, queue_limit=queue_limit
        )
        # The one deliberate plaintext copy of an API key (keys are otherwise stored hashed only):
        # the local-dev convenience that lets every `taskq up` print the same ready-to-use key.
        store.client.set(keys.STACK_ORG, json.dumps({"orgId": org_id, "apiKey": api_key}))
    else:
        org_id, api_key = remembered
        store.update_org(org_id, concurrency=concurrency)
        if store.credits(store.org(org_id))["remaining"] < TOP_UP_BELOW:
            store.add_credits(org_id, CREDITS)
    return StackOrg(org_id, api_key, store.webhook_secrets(org_id), remembered is None)
