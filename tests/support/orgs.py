"""Organizations for the tests, and the header that authenticates as one."""

from __future__ import annotations

from typing import NamedTuple

from taskq.store import Store


class NewOrg(NamedTuple):
    id: str
    key: str  # its API key


def new_org(
    store: Store,
    name: str = "test",
    *,
    credits: int = 10_000,
    concurrency: int = 100,
    queue_limit: int = 100_000,
) -> NewOrg:
    """Create an organization (plenty of credits, concurrency and queue room unless told otherwise)."""
    return NewOrg(*store.create_org(name, credits=credits, concurrency=concurrency, queue_limit=queue_limit))


def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}
