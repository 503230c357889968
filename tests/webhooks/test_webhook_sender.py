"""Delivery of one attempt against a real aiohttp receiver on 127.0.0.1, and the retry delay."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from aiohttp import web

from taskq.webhooks import signing
from taskq.webhooks.sender import Attempt, WebhookSender, next_delay, parse_retry_after
from taskq.webhooks.ssrf import parse_networks
from tests.support.receiver import Receiver, receiving

LOOPBACK = parse_networks(["127.0.0.0/8"])
SECRET = signing.generate_secret()
BODY = b'{"type":"task.completed","data":{"id":"t_1"}}'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def signed() -> dict[str, str]:
    return signing.headers([SECRET], "evt_1", int(time.time()), BODY)


def deliver(path: str, *, timeout: float = 15.0, require_https: bool = False) -> tuple[Attempt, Receiver]:
    async def run() -> tuple[Attempt, Receiver]:
        async with (
            receiving([SECRET]) as receiver,
            WebhookSender(LOOPBACK, require_https=require_https, timeout=timeout) as s,
        ):
            return await s.send(receiver.base + path, BODY, signed()), receiver

    return asyncio.run(run())


def test_a_2xx_with_a_verified_signature_is_delivered() -> None:
    attempt, _ = deliver("/ok")
    assert (attempt.outcome, attempt.status, attempt.error) == ("delivered", 204, None)


def test_a_redirect_is_a_failure_and_is_not_followed() -> None:
    attempt, receiver = deliver("/redirect")
    assert (attempt.outcome, attempt.status) == ("retry", 302)
    assert attempt.error is not None and "not followed" in attempt.error
    assert "/landed" not in receiver.paths


def test_410_gone_stops_retries() -> None:
    attempt, _ = deliver("/gone")
    assert (attempt.outcome, attempt.status) == ("gone", 410)


def test_429_carries_retry_after_seconds() -> None:
    attempt, _ = deliver("/busy")
    assert (attempt.outcome, attempt.status, attempt.retry_after) == ("retry", 429, 120.0)


def test_503_carries_retry_after_as_an_http_date() -> None:
    attempt, _ = deliver("/down")
    assert (attempt.outcome, attempt.status) == ("retry", 503)
    assert attempt.retry_after is not None and 0 <= attempt.retry_after <= 1


def test_a_server_error_is_retried_without_a_hint() -> None:
    attempt, _ = deliver("/boom")
    assert (attempt.outcome, attempt.status, attempt.retry_after, attempt.error) == (
        "retry",
        500,
        None,
        "HTTP 500",
    )


def test_a_receiver_that_does_not_answer_in_time_is_retried() -> None:
    attempt, _ = deliver("/hang", timeout=0.3)
    assert (attempt.outcome, attempt.status) == ("retry", None)
    assert attempt.error == "timed out after 0.3 s"
    assert attempt.duration_ms < 2000


def test_a_refused_connection_is_retried_not_raised() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def run() -> Attempt:
        async with WebhookSender(LOOPBACK, require_https=False) as sender:
            return await sender.send(f"http://127.0.0.1:{port}/ok", BODY, signed())

    attempt = asyncio.run(run())
    assert (attempt.outcome, attempt.status) == ("retry", None)
    assert attempt.error is not None and "ClientConnectorError" in attempt.error


def test_a_private_target_is_blocked_before_connecting() -> None:
    async def run() -> tuple[Attempt, Attempt, Receiver]:
        async with receiving([SECRET]) as receiver, WebhookSender(require_https=False) as sender:
            literal = await sender.send(receiver.base + "/ok", BODY, signed())
            by_name = await sender.send(
                receiver.base.replace("127.0.0.1", "localhost") + "/ok", BODY, signed()
            )
            return literal, by_name, receiver

    literal, by_name, receiver = asyncio.run(run())
    assert (literal.outcome, literal.status) == ("blocked", None)
    assert literal.error is not None and "a loopback address" in literal.error
    assert by_name.outcome == "blocked"
    assert receiver.hits == []


def test_https_is_required_unless_switched_off() -> None:
    attempt, receiver = deliver("/ok", require_https=True)
    assert attempt.outcome == "blocked"
    assert attempt.error == "webhook url must use https"
    assert receiver.hits == []


def test_the_connection_goes_to_the_checked_address_and_keeps_the_hostname() -> None:
    async def pinned(host: str, port: int) -> list[str]:
        return {"hooks.example": ["127.0.0.1"], "rebind.example": ["10.0.0.5"]}[host]

    async def run() -> tuple[Attempt, Attempt]:
        async with (
            receiving([SECRET]) as receiver,
            WebhookSender(LOOPBACK, require_https=False, resolver=pinned) as s,
        ):
            port = receiver.base.rsplit(":", 1)[1]
            good = await s.send(f"http://hooks.example:{port}/host", BODY, signed())
            bad = await s.send(f"http://rebind.example:{port}/host", BODY, signed())
            return good, bad

    good, bad = asyncio.run(run())
    assert (good.outcome, good.status) == ("delivered", 200)
    assert (bad.outcome, bad.error) == ("blocked", "webhook url resolves to 10.0.0.5, a private address")


def test_hanging_receivers_do_not_hold_up_other_sends() -> None:
    async def run() -> tuple[Attempt, list[Attempt]]:
        sender = WebhookSender(LOOPBACK, require_https=False, timeout=5, max_connections=8)
        async with receiving([SECRET]) as slow, receiving([SECRET]) as fast, sender:
            hanging = [
                asyncio.create_task(sender.send(slow.base + "/hang", BODY, signed())) for _ in range(8)
            ]
            await asyncio.sleep(0.1)  # the hanging sends hold their connections now
            quick = await sender.send(fast.base + "/ok", BODY, signed())
            assert not any(task.done() for task in hanging)
            slow.release.set()
            return quick, await asyncio.gather(*hanging)

    quick, released = asyncio.run(run())
    assert quick.outcome == "delivered"
    assert quick.duration_ms < 1000
    assert {attempt.outcome for attempt in released} == {"delivered"}


def test_next_delay_keeps_between_half_and_all_of_the_scheduled_entry() -> None:
    rng = random.Random(7)
    delays = [next_delay(2, [5.0, 300.0], None, rng) for _ in range(1000)]
    assert all(d is not None and 150.0 <= d <= 300.0 for d in delays)
    assert len({round(d or 0, 3) for d in delays}) > 900  # jittered, not constant


def test_next_delay_honours_retry_after_as_a_floor() -> None:
    assert next_delay(1, [5.0], 3600.0, random.Random(1)) == 3600.0
    assert 2.5 <= (next_delay(1, [5.0], 1.0, random.Random(1)) or 0) <= 5.0


def test_next_delay_is_none_once_the_schedule_is_spent() -> None:
    assert next_delay(3, [5.0, 300.0], None) is None
    assert next_delay(3, [5.0, 300.0], 10.0) is None
    with pytest.raises(ValueError):
        next_delay(0, [5.0], None)


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:01:00 GMT", now) == 60.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("999999999", now) == 86_400.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after(None, now) is None
    for digits in ("²", "٣", "\uff11"):  # a receiver's non-ASCII digits: ignored, never an error
        assert parse_retry_after(digits, now) is None
