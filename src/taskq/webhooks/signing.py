"""Standard Webhooks v1 signing: whsec_ secrets, HMAC-SHA256 signatures and the webhook-* headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets as _random
from functools import lru_cache

SECRET_PREFIX = "whsec_"
USER_AGENT = "taskq-webhooks/1"


def generate_secret() -> str:
    """Return a fresh secret: "whsec_" + base64 of 32 random bytes (the spec allows 24-64)."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(32)).decode("ascii")


def active_secrets(raw: str | None, at_ms: int) -> list[str]:
    """The secrets still valid at at_ms, newest first, from an org's wh_secrets json
    ([{"secret", "expires": ms or null}]; two are valid while a rotation overlaps)."""
    return [secret for secret, expires in _secret_entries(raw or "") if expires is None or expires > at_ms]


@lru_cache(maxsize=256)
def _secret_entries(raw: str) -> tuple[tuple[str, int | None], ...]:
    # Every delivery of an org carries the same json: parse it once (a rotation changes the json).
    return tuple((e["secret"], e["expires"]) for e in (json.loads(raw) if raw else []))


def _key(secret: str) -> bytes:
    # The reference libraries accept the secret with or without its prefix; so do we.
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


@lru_cache(maxsize=512)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC already keyed with this secret: each signature copies it (no base64 decode, no key setup)."""
    return hmac.new(_key(secret), digestmod=hashlib.sha256)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return "v1,<base64 HMAC-SHA256>" over "{msg_id}.{timestamp}.{body}" for one secret."""
    if "." in msg_id:
        # The spec forbids it: a dot in the id would make the signed content ambiguous.
        raise ValueError("webhook-id must not contain '.'")
    mac = _keyed(secret).copy()
    mac.update(f"{msg_id}.{timestamp}.".encode())
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signature_header(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the webhook-signature value: one signature per active secret, space-separated.

    Several secrets are active while a secret is rotated; receivers accept any one match.
    """
    if not secrets:
        raise ValueError("at least one signing secret is required")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def headers(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Return every header of one delivery attempt; sign the exact bytes that are sent."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
