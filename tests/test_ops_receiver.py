"""The demo's webhook receiver: Standard Webhooks verification, agreeing with the reference library."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import standardwebhooks

from taskq.ops.receiver import Receiver, verify
from taskq.webhooks import signing

SECRET = signing.generate_secret()
BODY = json.dumps({"task": {"id": "3f1c6b1e-9a53-4c1e-9d7e-1b6f0f0c2a11", "status": "COMPLETED"}}).encode()


def signed(body: bytes = BODY, secrets: list[str] | None = None, stamp: int | None = None) -> dict[str, str]:
    now = int(time.time()) if stamp is None else stamp
    return signing.headers(secrets or [SECRET], "msg_abc123", now, body)


def test_a_delivery_signed_by_taskq_verifies() -> None:
    assert verify([SECRET], signed(), BODY) is None


def test_a_signature_from_the_reference_library_verifies() -> None:
    stamp = datetime.now(tz=UTC)
    signature = standardwebhooks.Webhook(SECRET).sign("msg_ref", stamp, BODY.decode())
    headers = {
        "webhook-id": "msg_ref",
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
    }
    assert verify([SECRET], headers, BODY) is None


def test_the_reference_library_accepts_what_the_receiver_accepts() -> None:
    headers = signed()
    assert verify([SECRET], headers, BODY) is None
    assert standardwebhooks.Webhook(SECRET).verify(BODY, headers) == json.loads(BODY)


def test_a_changed_body_is_refused() -> None:
    assert verify([SECRET], signed(), BODY.replace(b"COMPLETED", b"FAILED")) == (
        "no signature matches the organization's secrets"
    )


def test_another_secret_is_refused() -> None:
    assert verify([signing.generate_secret()], signed(), BODY) is not None


def test_a_stale_timestamp_is_refused_even_when_signed() -> None:
    reason = verify([SECRET], signed(stamp=int(time.time()) - 3600), BODY)
    assert reason is not None and "timestamp" in reason


def test_missing_headers_are_refused() -> None:
    assert verify([SECRET], {}, BODY) == "missing webhook-id, webhook-timestamp or webhook-signature"


def test_during_a_rotation_either_secret_verifies() -> None:
    new = signing.generate_secret()
    headers = signed(secrets=[new, SECRET])
    assert verify([SECRET], headers, BODY) is None
    assert verify([new], headers, BODY) is None


def test_the_receiver_acknowledges_good_deliveries_and_refuses_bad_ones_over_http() -> None:
    with Receiver([SECRET]) as receiver:
        good = httpx.post(receiver.url, content=BODY, headers=signed())
        again = httpx.post(receiver.url, content=BODY, headers=signed())  # a retry: same webhook-id
        bad_headers = signed() | {"webhook-id": "msg_other"}
        bad = httpx.post(receiver.url, content=BODY, headers=bad_headers)

    assert (good.status_code, again.status_code, bad.status_code) == (204, 204, 400)
    deliveries = {d.msg_id: d for d in receiver.snapshot()}
    assert receiver.attempts == 3
    assert deliveries["msg_abc123"].verified
    assert deliveries["msg_abc123"].task_id == "3f1c6b1e-9a53-4c1e-9d7e-1b6f0f0c2a11"
    assert not deliveries["msg_other"].verified
