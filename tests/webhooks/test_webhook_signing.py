"""Standard Webhooks signing: the published test vector, and the reference library as the receiver."""

from __future__ import annotations

import base64
import time

import pytest
import standardwebhooks

from taskq.webhooks import signing

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_reproduces_the_published_test_vector() -> None:
    assert signing.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_secret_prefix_is_optional_like_the_reference_libraries() -> None:
    bare = VECTOR_SECRET.removeprefix("whsec_")
    assert signing.sign(bare, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_generated_secrets_are_whsec_and_32_random_bytes() -> None:
    first, second = signing.generate_secret(), signing.generate_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert first != second


def test_headers_verify_with_the_standardwebhooks_library_unchanged() -> None:
    secret = signing.generate_secret()
    body = b'{"type":"task.completed","data":{"id":"t_1"}}'
    sent = signing.headers([secret], "evt_1", int(time.time()), body)

    assert standardwebhooks.Webhook(secret).verify(body, sent) == {
        "type": "task.completed",
        "data": {"id": "t_1"},
    }
    assert sent["content-type"] == "application/json"
    assert sent["user-agent"] == "taskq-webhooks/1"
    assert sent["webhook-id"] == "evt_1"


def test_during_rotation_both_old_and_new_secret_verify() -> None:
    old, new = signing.generate_secret(), signing.generate_secret()
    body = b'{"ok":true}'
    sent = signing.headers([old, new], "evt_2", int(time.time()), body)

    assert len(sent["webhook-signature"].split(" ")) == 2
    standardwebhooks.Webhook(old).verify(body, sent)
    standardwebhooks.Webhook(new).verify(body, sent)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(signing.generate_secret()).verify(body, sent)


def test_a_tampered_body_fails_verification() -> None:
    secret = signing.generate_secret()
    sent = signing.headers([secret], "evt_3", int(time.time()), b'{"n":1}')
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(b'{"n":2}', sent)


def test_an_id_containing_a_dot_is_refused() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        signing.sign(VECTOR_SECRET, "evt.1", VECTOR_TIMESTAMP, VECTOR_BODY)


def test_signing_needs_at_least_one_secret() -> None:
    with pytest.raises(ValueError, match="at least one"):
        signing.signature_header([], VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
