"""Security and bad input: tenant isolation, API keys at rest, SSRF at admission and at send time, rate
limits shared across intake processes, and request-size limits (memory, slow clients)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskq.api import create_app
from taskq.connection import connect
from taskq.scheduler import claim, complete
from taskq.settings import load_settings
from taskq.store import Store, key_digest, now_ms
from taskq.webhooks.sender import WebhookSender
from taskq.worker.webhook_loop import run_deliveries
from tests.support.clients import Client, async_client
from tests.support.deliveries import finish_task, log_of, states
from tests.support.env import ALL_KEYS, REAL_REDIS_URL
from tests.support.orgs import auth
from tests.support.processes import Processes, start_intake, worker_env
from tests.support.receiver import ReceiverProcess
from tests.support.scheduler import Scheduler
from tests.support.settings import make_settings

BATCH = "/v1/async/task/batch"
PUBLIC_HOOK = "https://93.184.216.34/hook"  # a literal public address: admitted without DNS


def chatgpt(prompt: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"taskType": "CHATGPT", "payload": {"prompt": prompt, "country": "US"}, **extra}


def start_of_a_second() -> None:
    """Rate windows are whole seconds: start a burst early in one so it does not straddle two."""
    time.sleep(1.02 - time.time() % 1)


# Isolation -----------------------------------------------------------------------------------------
def test_another_org_cannot_reach_tasks_or_batches_by_id(http: Any, make_org: Any, store: Store) -> None:
    owner, owner_key = make_org()
    _, intruder = make_org()
    r = http.post(BATCH, json=[chatgpt(f"p{i}", webhook={"url": PUBLIC_HOOK}) for i in range(3)],
                  headers=auth(owner_key))  # fmt: skip
    batch_id = r.json["batchId"]
    ids = [item["task"]["id"] for item in r.json["results"]]
    shard = store.org(owner).shard
    [leased] = Scheduler(store.client).run(
        claim(shard, {"CHATGPT": None}, now=now_ms(), lease_ms=60_000, k=1)
    )
    assert Scheduler(store.client).run(complete(leased, {"text": "a"}, now=now_ms(), retention=3600))
    before = {i: store.client.hgetall(shard.task(i)) for i in ids}

    for task_id in [*ids, str(uuid.uuid4())]:
        for method, path in [
            ("get", f"/v1/async/task/{task_id}"),
            ("get", f"/v1/async/task/{task_id}/deliveries"),
            ("post", f"/v1/async/task/{task_id}/webhook/redeliver"),
        ]:
            answer = getattr(http, method)(path, headers=auth(intruder))
            assert answer.status_code == 404, (path, answer.json)
            assert answer.json["error"]["message"] == f"Task {task_id} not found"  # same as a made-up id
    for path in [f"/v1/async/batch/{batch_id}", f"/v1/async/batch/{batch_id}/results"]:
        assert http.get(path, headers=auth(intruder)).status_code == 404
    assert http.get(f"/v1/async/tasks?batchId={batch_id}", headers=auth(intruder)).json["tasks"] == []
    assert http.get("/v1/async/tasks", headers=auth(intruder)).json["tasks"] == []
    status = http.get("/v1/async/status", headers=auth(intruder)).json
    assert (status["queuedTasks"], status["processingTasks"]) == (0, 0)
    assert http.delete("/v1/async/queue", headers=auth(intruder)).json == {"success": True, "cleared": 0}

    assert {i: store.client.hgetall(shard.task(i)) for i in ids} == before
    assert http.get("/v1/async/status", headers=auth(owner_key)).json["queuedTasks"] == 2
    assert (
        http.post(f"/v1/async/task/{leased.id}/webhook/redeliver", headers=auth(owner_key)).status_code == 200
    )


# API keys ------------------------------------------------------------------------------------------
def test_keys_are_refused_with_the_right_code(http: Any, make_org: Any, store: Store) -> None:
    org, key = make_org()
    spare = store.create_key(org)
    cases = {
        f"Bearer {key}": 200,
        f"Bearer {key[:-1]}": "INVALID_API_KEY_FORMAT",  # truncated
        f"Bearer {key}0": "INVALID_API_KEY_FORMAT",
        f"Bearer {key.upper()}": "INVALID_API_KEY_FORMAT",
        f"Bearer sk_live_{'0' * 32}": "INVALID_OR_EXPIRED_API_KEY",  # well-formed, unknown
        f"bearer {key}": "MISSING_API_KEY",  # the scheme is matched as the reference API does
        key: "MISSING_API_KEY",
    }
    for header, expected in cases.items():
        r = http.get("/v1/credits", headers={"Authorization": header})
        assert (r.status_code if expected == 200 else r.json["error"]["code"]) == expected, header
        assert expected == 200 or r.status_code == 401
    assert store.revoke_key(key)
    assert http.get("/v1/credits", headers=auth(key)).json["error"]["code"] == "INVALID_OR_EXPIRED_API_KEY"
    assert http.get("/v1/credits", headers=auth(spare)).status_code == 200


def test_no_api_key_is_recoverable_from_redis(rclient: Any, store: Store, http: Any) -> None:
    made = [store.create_org(f"org{i}", credits=100, concurrency=1, queue_limit=10) for i in range(3)]
    api_keys = [key for _, key in made] + [store.create_key(made[0][0])]
    for key in api_keys:  # used, so rate-limit counters and the like exist too
        assert http.get("/v1/credits", headers=auth(key)).status_code == 200
    store.revoke_key(api_keys[1])
    dump = []
    for name in rclient.scan_iter("*"):
        kind = rclient.type(name)
        value: Any = {
            "string": lambda n: rclient.get(n),
            "hash": lambda n: rclient.hgetall(n),
            "set": lambda n: sorted(rclient.smembers(n)),
            "zset": lambda n: rclient.zrange(n, 0, -1),
            "list": lambda n: rclient.lrange(n, 0, -1),
        }[kind](name)
        dump.append(f"{name} {json.dumps(value)}")
    text = "\n".join(dump)
    for key in api_keys:
        secret = key.removeprefix("sk_live_")
        assert len(secret) == 32 and secret not in text and secret.upper() not in text
    for key in (api_keys[0], api_keys[2], api_keys[3]):
        assert key_digest(key) in text  # what is stored instead: the sha256 digest
    assert key_digest(api_keys[1]) not in text  # revoked: gone entirely


# SSRF ----------------------------------------------------------------------------------------------
BLOCKED_TARGETS = [
    "http://127.0.0.1/hook",
    "http://10.0.0.7/hook",
    "http://172.16.3.4/hook",
    "http://192.168.1.10:8080/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fd00::1]/hook",
    "http://localhost:8080/hook",  # a name resolving to loopback
    "http://metadata.internal.test/hook",  # resolved to a private address by the DNS stand-in below
    "http://127.1/hook",
]


@pytest.fixture
def private_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS (the process edge) answers a private address for *.internal.test; other names as usual."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".internal.test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", port or 80))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_webhooks_to_private_addresses_are_refused_at_admission_per_task(
    http: Any, make_org: Any, private_dns: None
) -> None:
    _, key = make_org()
    body = [chatgpt(f"t{i}", webhook={"url": url}) for i, url in enumerate(BLOCKED_TARGETS)]
    body.append(chatgpt("fine", webhook={"url": PUBLIC_HOOK}))
    r = http.post(BATCH, json=body, headers=auth(key))
    assert r.status_code == 200
    results = r.json["results"]
    assert [item["success"] for item in results] == [False] * len(BLOCKED_TARGETS) + [True]
    for url, item in zip(BLOCKED_TARGETS, results, strict=False):
        assert item["error"]["code"] == "VALIDATION_ERROR", url
        [error] = item["error"]["details"]["errors"]
        assert error["field"] == "webhook.url", url
    messages = [item["error"]["details"]["errors"][0]["message"] for item in results[:-1]]
    assert "loopback" in messages[0] and "link-local" in messages[4] and "10.20.30.40" in messages[11]
    single = http.post(
        "/v1/async/task", json=chatgpt(webhook={"url": "http://localhost/x"}), headers=auth(key)
    )
    assert single.status_code == 400 and single.json["error"]["details"][0]["field"] == "webhook.url"
    assert http.get("/v1/async/status", headers=auth(key)).json["queuedTasks"] == 1


@pytest.mark.redis
def test_a_delivery_whose_host_now_resolves_to_a_blocked_address_is_never_sent(
    real_redis: Client,
) -> None:
    store = Store(real_redis)
    org, _ = store.create_org("ssrf", credits=100, concurrency=1, queue_limit=10)
    receiver = ReceiverProcess(store.webhook_secrets(org)).start()  # a live target on loopback
    try:
        rebound = f"http://hooks.customer.example:{receiver.port}/hook"  # public at admission, not now
        literal = f"http://127.0.0.1:{receiver.port}/hook"
        made = [finish_task(store, org, url) for url in (rebound, literal)]
        settings = make_settings("webhooks", webhook_allow_networks=[])

        async def resolve(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]  # DNS rebinding: the name points at the loopback address now

        async def run() -> None:
            client = async_client(REAL_REDIS_URL)
            stop = asyncio.Event()
            async with WebhookSender((), require_https=False, timeout=2, resolver=resolve) as sender:
                loop = asyncio.create_task(run_deliveries(client, settings, stop, sender=sender))
                deadline = time.monotonic() + 8
                while states(real_redis, store, org, [d for _, d in made]) != ["failed", "failed"]:
                    assert time.monotonic() < deadline and not loop.done()
                    await asyncio.sleep(0.02)
                stop.set()
                await loop
            await client.aclose()

        asyncio.run(run())
    finally:
        receiver.stop()
    assert receiver.hits == []  # no connection was made
    for _, delivery in made:
        [attempt] = log_of(real_redis, store, org, delivery)
        assert attempt["outcome"] == "blocked" and attempt["status"] is None
        assert "127.0.0.1" in attempt["error"] and "loopback" in attempt["error"]


# Rate limits ---------------------------------------------------------------------------------------
def test_rate_limit_per_key_and_endpoint_with_headers_on_every_answer(rclient: Any, make_org: Any) -> None:
    http: Any = create_app(make_settings(rate_limit_per_second=5), client=rclient).test_client()
    org, key = make_org()
    other_key = Store(rclient).create_key(org)
    start_of_a_second()
    seen = []
    for _ in range(5):
        r = http.get("/v1/async/task/" + str(uuid.uuid4()), headers=auth(key))  # 404s count too
        assert r.status_code == 404
        seen.append((r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]))
    assert seen == [("5", str(4 - n)) for n in range(5)]
    over = http.get("/v1/async/task/" + str(uuid.uuid4()), headers=auth(key))
    assert over.status_code == 429 and over.json["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert (over.headers["X-RateLimit-Limit"], over.headers["X-RateLimit-Remaining"]) == ("5", "0")
    assert http.get("/v1/credits", headers=auth(key)).status_code == 200  # another endpoint
    assert http.get("/v1/async/task/" + str(uuid.uuid4()), headers=auth(other_key)).status_code == 404


def test_the_default_limit_is_1000_per_second_and_the_environment_changes_it(
    rclient: Any, make_org: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = make_org()
    default: Any = create_app(make_settings(), client=rclient).test_client()
    assert default.get("/v1/credits", headers=auth(key)).headers["X-RateLimit-Limit"] == "1000"
    monkeypatch.setenv("TASKQ_RATE_LIMIT_PER_SECOND", "7")
    configured: Any = create_app(load_settings(**ALL_KEYS), client=rclient).test_client()
    assert configured.get("/v1/async/status", headers=auth(key)).headers["X-RateLimit-Limit"] == "7"


@pytest.mark.redis
def test_two_intake_instances_on_one_redis_share_one_budget(real_redis: Client) -> None:
    _, key = Store(real_redis).create_org("rl", credits=10, concurrency=1, queue_limit=10)
    settings = make_settings(rate_limit_per_second=6)
    first: Any = create_app(settings, client=connect(REAL_REDIS_URL)).test_client()
    second: Any = create_app(settings, client=connect(REAL_REDIS_URL)).test_client()
    start_of_a_second()
    remaining = [int(c.get("/v1/credits", headers=auth(key)).headers["X-RateLimit-Remaining"])
                 for c in (first, second) * 3]  # fmt: skip
    assert remaining == [5, 4, 3, 2, 1, 0]
    assert first.get("/v1/credits", headers=auth(key)).status_code == 429
    assert second.get("/v1/credits", headers=auth(key)).status_code == 429


# Request limits ------------------------------------------------------------------------------------
def test_an_oversized_body_is_413_and_deep_nesting_422(http: Any, make_org: Any) -> None:
    _, key = make_org()
    huge = b"[" + b'"' + b"x" * (16 * 1024 * 1024) + b'"]'
    r = http.post(BATCH, data=huge, headers={**auth(key), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json["error"]["code"] == "PAYLOAD_TOO_LARGE"
    deep = b"[" * 50_000 + b"]" * 50_000
    r = http.post(BATCH, data=deep, headers={**auth(key), "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json["error"]["code"] == "VALIDATION_ERROR"
    assert http.get("/v1/async/status", headers=auth(key)).json["queuedTasks"] == 0


def test_500_tasks_of_10000_characters_are_admitted_in_bounded_memory(http: Any, make_org: Any) -> None:
    _, key = make_org(credits=10_000_000)
    body = json.dumps([chatgpt(f"{i:05d}" + "x" * 9_995) for i in range(500)]).encode()
    tracemalloc.start()
    try:
        r = http.post(BATCH, data=body, headers={**auth(key), "Content-Type": "application/json"})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"\none request of {len(body) / 1e6:.1f} MB (500 x 10,000-char prompts): peak {peak / 1e6:.0f} MB")
    assert r.status_code == 200 and r.json["summary"]["succeeded"] == 500
    assert peak < 200 * 1024 * 1024


@pytest.fixture
def served(tmp_path: Path, real_redis: Client) -> Iterator[tuple[str, str]]:
    """`taskq serve` (one gthread worker, 4 threads) on the test Redis; yields (url, api key)."""
    procs = Processes(tmp_path / "logs")
    try:
        url = start_intake(procs, worker_env(REAL_REDIS_URL, "http://127.0.0.1:9"), workers=1, threads=4)
        _, key = Store(real_redis).create_org("slow", credits=1000, concurrency=1, queue_limit=100)
        yield url, key
    finally:
        procs.close()


@pytest.mark.redis
@pytest.mark.slow
def test_a_client_trickling_its_body_does_not_hold_up_other_requests(served: tuple[str, str]) -> None:
    url, key = served
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps([chatgpt("slow")]).encode()
    slow = socket.create_connection(("127.0.0.1", port))
    head = (f"POST {BATCH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
    slow.sendall(head.encode() + body[:5])
    took = []
    with httpx.Client(base_url=url, headers=auth(key), timeout=30) as client:
        for n, byte in enumerate(body[5:25]):
            slow.sendall(bytes([byte]))  # one byte every 50 ms while others are served
            t0 = time.monotonic()
            r = client.post(BATCH, json=[chatgpt(f"fast {n}")]) if n % 2 else client.get("/v1/credits")
            took.append(time.monotonic() - t0)
            assert r.status_code == 200
            time.sleep(0.05)
        slow.sendall(body[25:])
        slow.settimeout(5)
        answer = ""
        while '"succeeded"' not in answer:  # headers and body may arrive in separate segments
            chunk = slow.recv(65536).decode()
            if not chunk:
                break
            answer += chunk
    slow.close()
    print(f"\nwhile one client trickled its body: other requests took at most {max(took) * 1000:.0f} ms")
    # Each request above was answered while the slow body was still arriving (one blocked behind it would
    # have waited for the body the loop had not sent yet, and timed out): no timing bound needed.
    assert answer.startswith("HTTP/1.1 200") and '"succeeded":1' in answer.replace(" ", "")


@pytest.mark.redis
@pytest.mark.slow
def _read_response(sock: socket.socket) -> str:
    """One whole HTTP response (head and Content-Length body), however the bytes arrive."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode()
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while length and len(body) < int(length[1]):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def _closed_by_server(sock: socket.socket) -> bool:
    """What a trickling client sends after its 408 meets a closed connection (not a new request)."""
    try:
        sock.sendall(b"late bytes")
        return sock.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_more_stalled_clients_than_threads_get_408_and_the_intake_keeps_serving(
    tmp_path: Path, real_redis: Client
) -> None:
    procs = Processes(tmp_path / "logs")
    try:
        env = {**worker_env(REAL_REDIS_URL, "http://127.0.0.1:9"), "TASKQ_BODY_READ_TIMEOUT_SECONDS": "1"}
        url = start_intake(procs, env, workers=1, threads=2)
        _, key = Store(real_redis).create_org("stall", credits=1000, concurrency=1, queue_limit=100)
        port = int(url.rsplit(":", 1)[1])
        head = (f"POST {BATCH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {key}\r\nContent-Length: 1000\r\n\r\n[")  # fmt: skip
        stalled = []
        for _ in range(6):  # three times the threads, each sending one byte and then nothing
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(head.encode())
            stalled.append(sock)
        t0 = time.monotonic()
        with httpx.Client(base_url=url, headers=auth(key), timeout=10) as client:
            assert client.get("/v1/credits").status_code == 200
        served_after = time.monotonic() - t0
        answers = []
        closed = []
        for sock in stalled:
            sock.settimeout(10)
            answers.append(_read_response(sock))
            closed.append(_closed_by_server(sock))
            sock.close()
        assert all(a.startswith("HTTP/1.1 408") and "REQUEST_TIMEOUT" in a for a in answers), answers
        assert all(closed), closed
        assert served_after < 5.0
    finally:
        procs.close()
