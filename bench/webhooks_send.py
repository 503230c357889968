"""Benchmark: signed webhook deliveries per second from one process, against a local aiohttp receiver.

Run: `python bench/webhooks_send.py [--in-flight 300] [--seconds 5]`. The receiver runs in a
subprocess so the CPU figure is the sender's alone (signing, httpx, aiohttp, SSRF resolver).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

from aiohttp import web

from taskq.webhooks import signing
from taskq.webhooks.sender import WebhookSender
from taskq.webhooks.ssrf import parse_networks

TARGET_PER_S = 1_000
BODY = b'{"type":"task.completed","timestamp":"2026-01-01T00:00:00Z","data":{"id":"tsk_0123456789abcdef"}}'


async def serve() -> None:
    """The receiver: answers 204 without verifying, so it is never the slower side."""

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await runner.cleanup()


async def send_for(url: str, in_flight: int, seconds: float) -> tuple[int, int, list[float]]:
    secret = signing.generate_secret()
    delivered = failed = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(sender: WebhookSender, number: int) -> None:
        nonlocal delivered, failed
        sent = 0
        while time.perf_counter() < deadline:
            headers = signing.headers([secret], f"evt_{number}_{sent}", int(time.time()), BODY)
            attempt = await sender.send(url, BODY, headers)
            sent += 1
            latencies.append(attempt.duration_ms)
            if attempt.outcome == "delivered":
                delivered += 1
            else:
                failed += 1

    sender = WebhookSender(
        parse_networks(["127.0.0.0/8"]),
        require_https=False,
        max_connections=in_flight,
        max_per_host=in_flight,  # one receiver here; production keeps the per-host cap
    )
    async with sender:
        await asyncio.gather(*(worker(sender, n) for n in range(in_flight)))
    return delivered, failed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return

    receiver = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert receiver.stdout is not None
        url = f"http://127.0.0.1:{int(receiver.stdout.readline())}/hook"
        asyncio.run(send_for(url, 20, 0.5))  # warm-up: imports, first connections
        cpu0, wall0 = time.process_time(), time.perf_counter()
        delivered, failed, latencies = asyncio.run(send_for(url, args.in_flight, args.seconds))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        assert receiver.stdin is not None
        receiver.stdin.close()
        receiver.wait(10)

    latencies.sort()
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else float("nan")
    rate = delivered / wall
    print(f"machine          : {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"in flight        : {args.in_flight} for {wall:.1f} s")
    print(f"delivered        : {delivered:,} (failed {failed:,})")
    verdict = "met" if rate >= TARGET_PER_S else "MISSED"
    print(f"deliveries/s     : {rate:,.0f}   (target >= {TARGET_PER_S:,}/s: {verdict})")
    print(f"CPU per delivery : {cpu * 1000 / max(delivered, 1):.3f} ms (sender process)")
    print(f"latency p50/p99  : {p50:.0f} / {p99:.0f} ms")


if __name__ == "__main__":
    main()
