"""The intake's ASGI layer on a real server and a real Redis: what every request gets (request id,
latency, body limits) whether the loop answers it (monitor calls) or Flask does (everything else);
the monitor calls' own checks (media type, per-key rate limit); and a burst of calls admitted
together on one loop, each with its own verdict."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from taskq import keys
from taskq.calls import Admitted, Calls, Lookups, Refused
from taskq.connection import async_connect
from taskq.errors import Code
from taskq.store import Store, header_digest
from tests.support.clients import Client, sync_client
from tests.support.env import REAL_REDIS_URL
from tests.support.intake import ServedIntake
from tests.support.orgs import auth
from tests.support.settings import make_settings
from tests.support.tasks import counters, request

pytestmark = pytest.mark.redis

CHAT = {"prompt": "Which vector databases support hybrid search?", "country": "US"}
TASK = {"taskType": "CHATGPT", "payload": CHAT}


@pytest.fixture
def store(real_redis: Client, settings: Any) -> Store:
    return Store(real_redis, settings.shards)


def test_request_id_and_latency_on_every_answer_of_the_loop_and_of_flask(
    make_intake: Any, make_org: Any
) -> None:
    http = make_intake(make_settings(max_body_bytes=4096)).http
    _, key = make_org()
    answers = {
        "bridged task": http.post("/v1/async/task", json=TASK, headers=auth(key)),
        "bridged read": http.get("/v1/async/status", headers=auth(key)),
        "bridged 404": http.get("/nowhere"),
        "monitor 401": http.post("/v1/monitor/chatgpt", json=CHAT),
        "monitor 400": http.post("/v1/monitor/grok", json={}, headers=auth(key)),
        "monitor 413": http.post("/v1/monitor/chatgpt", content=b"x" * 5000, headers=auth(key)),
        "bridged 413": http.post("/v1/async/task", content=b"x" * 5000, headers=auth(key)),
    }
    assert answers["bridged task"].status_code == 200, answers["bridged task"].text
    for name, got in answers.items():
        assert got.headers.get("X-Request-ID") and got.headers["X-Latency-Ms"].isdigit(), name
        assert got.headers.get_list("X-Request-ID") == [got.headers["X-Request-ID"]], "one, not two"
    ids = {got.headers["X-Request-ID"] for got in answers.values()}
    assert len(ids) == len(answers), "a new id per request"
    for name in ("monitor 413", "bridged 413"):
        got = answers[name]
        assert got.status_code == 413 and got.json()["error"]["code"] == "PAYLOAD_TOO_LARGE", name
        assert got.json()["error"]["details"] == {"max": 4096}
    echoed = http.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    monitor = http.post("/v1/monitor/chatgpt", json={}, headers={**auth(key), "X-Request-ID": "mine"})
    assert monitor.headers["X-Request-ID"] == "mine"


def test_a_body_that_trickles_in_gets_408_and_the_connection_closed(make_intake: Any, make_org: Any) -> None:
    intake = make_intake(make_settings(body_read_timeout_seconds=0.3))
    _, key = make_org()
    host, port = intake.base.removeprefix("http://").split(":")
    for path in ("/v1/monitor/chatgpt", "/v1/async/task"):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            request_head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")  # fmt: skip
            sock.sendall(request_head.encode())
            started = time.monotonic()
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            assert time.monotonic() - started < 5
        head = reply.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 408") and b"connection: close" in head, (path, head)
        assert b"REQUEST_TIMEOUT" in reply and b"x-request-id" in head


def test_a_monitor_call_needs_json_and_counts_against_its_keys_rate_limit(
    make_intake: Any, make_org: Any
) -> None:
    http = make_intake(make_settings(rate_limit_per_second=3, openai_api_key=None)).http
    _, key = make_org()
    text = http.post(
        "/v1/monitor/chatgpt", content=b"{}", headers={**auth(key), "Content-Type": "text/plain"}
    )
    assert text.status_code == 415 and text.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    answers = [http.post("/v1/monitor/chatgpt", json=CHAT, headers=auth(key)) for _ in range(8)]
    codes = [got.status_code for got in answers]
    assert 429 in codes, codes  # 3 a second per key and path (the unconfigured provider answers 400)
    limited = next(got for got in answers if got.status_code == 429)
    assert limited.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert limited.headers["X-RateLimit-Limit"] == "3" and limited.headers["X-RateLimit-Remaining"] == "0"
    assert "X-Concurrency-Limit" not in limited.headers
    _, other = make_org()
    assert http.post("/v1/monitor/chatgpt", json=CHAT, headers=auth(other)).status_code == 400, "per key"


def test_lookups_sent_together_count_each_request_once_in_its_rate_window(
    store: Store, make_org: Any
) -> None:
    org_a, key_a = make_org()
    org_b, key_b = make_org()
    window = {key_a: keys.rate(header_digest(f"Bearer {key_a}")[:24], "POST:/x", 1),
              key_b: keys.rate(header_digest(f"Bearer {key_b}")[:24], "POST:/x", 1)}  # fmt: skip

    async def main() -> list[tuple[str, Any]]:
        client = async_connect(REAL_REDIS_URL, max_connections=4)
        lookups = Lookups(client)
        try:
            order = [key_a, key_b, key_a, key_a] * 50  # two keys interleaved in every round trip
            asks = [lookups.replies(header_digest(f"Bearer {key}"), window[key]) for key in order]
            return list(zip(order, await asyncio.gather(*asks), strict=True))
        finally:
            await client.aclose()

    got = asyncio.run(main())
    for key, org_id, n in ((key_a, org_a, 150), (key_b, org_b, 50)):
        replies = [reply for asked, reply in got if asked == key]
        counts = [store.key_found(reply, header_digest(f"Bearer {key}"))[1] for reply in replies]
        assert sorted(counts) == list(range(1, n + 1)), "each its own count, none shared or skipped"
        assert {store.key_found(reply, header_digest(f"Bearer {key}"))[0].id for reply in replies} == {org_id}
        assert store.client.get(window[key]) == str(n)
        assert 0 < int(store.client.execute_command("TTL", window[key])) <= 2, "the window still expires"


def admit_at_once(settings: Any, store: Any, org_id: str, n: int, flush: bool = False) -> list[Any]:
    """n admissions started together on one loop; each one's Admitted or Refused."""

    async def main() -> list[Any]:
        client = async_connect(REAL_REDIS_URL, max_connections=8)
        calls = Calls(client, settings)
        try:
            if flush:
                await calls.admit(store.org(org_id), request(prompt="warm"))
                store.client.script_flush()
            org = store.org(org_id)
            return list(await asyncio.gather(*(calls.admit(org, request(prompt=f"p{i}")) for i in range(n))))
        finally:
            await calls.aclose()
            await client.aclose()

    return asyncio.run(main())


def test_a_burst_of_calls_gets_one_verdict_each_and_the_limit_and_credits_hold(
    store: Store, make_org: Any, settings: Any
) -> None:
    org_id, _ = make_org(credits=10_000, concurrency=30)
    out = admit_at_once(settings, store, org_id, 48)
    admitted = [x for x in out if isinstance(x, Admitted)]
    refused = [x for x in out if isinstance(x, Refused)]
    assert len(admitted) == 30 and len(refused) == 18
    assert {x.error.code for x in refused} == {Code.CONCURRENCY_LIMIT_EXCEEDED}
    assert len({x.task_id for x in admitted}) == 30
    assert sorted(x.slots.current for x in admitted) == list(range(1, 31)), "each saw its own place"
    c = counters(store, org_id)
    assert c["reserved"] == sum(x.cost for x in admitted) and c["credits"] == 10_000
    assert int(store.org_fields(org_id)["q11"]) == 30

    poor, _ = make_org(credits=7 * 5, concurrency=100)
    out = admit_at_once(settings, store, poor, 12)
    assert sum(isinstance(x, Admitted) for x in out) == 5, "never an overdraft"
    assert {x.error.code for x in out if isinstance(x, Refused)} == {Code.INSUFFICIENT_CREDITS}
    assert counters(store, poor)["reserved"] == 35


def test_calls_are_admitted_after_the_server_lost_its_scripts(
    store: Store, make_org: Any, settings: Any
) -> None:
    org_id, _ = make_org(credits=10_000, concurrency=100)
    out = admit_at_once(settings, store, org_id, 24, flush=True)
    assert all(isinstance(x, Admitted) for x in out), out
    assert int(store.org_fields(org_id)["q11"]) == 25


def test_a_monitor_call_without_redis_is_503_in_the_envelope() -> None:
    nowhere = "redis://127.0.0.1:1/0"  # nothing listens there
    with ServedIntake(make_settings(), sync_client(nowhere), nowhere) as intake:
        got = intake.post("/v1/monitor/chatgpt", CHAT, "sk_live_" + "0" * 32)
        assert got.status_code == 503, got.text
        assert got.json()["error"]["code"] == "SERVICE_UNAVAILABLE" and got.headers["X-Request-ID"]
        assert intake.http.get("/healthz").status_code == 200, "the intake itself keeps serving"
