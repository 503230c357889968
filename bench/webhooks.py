"""Benchmark: webhook deliveries per second through the whole loop (claim, sign, send, record) in one process.

Run: `python bench/webhooks.py [--deliveries 20000] [--in-flight 300]`. A private Redis holds the
outbox; the receiver (a 204 answer, never the slower side) runs in a subprocess so the CPU figure
is the delivery process's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import redis
import redis.asyncio
from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import machine, private_redis
from taskq.keys import Shard, first_delivery
from taskq.settings import Settings
from taskq.store import Store, now_ms
from taskq.worker.webhook_loop import run_deliveries

TARGET_PER_S = 1_000


async def serve() -> None:
    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await runner.cleanup()


def seed(client: redis.Redis, url: str, count: int) -> list[str]:
    """Finished tasks with their first delivery queued, exactly as the completing script writes them."""
    store = Store(client)
    org_id, _ = store.create_org("bench", credits=0, concurrency=1, queue_limit=1)
    shard = store.org(org_id).shard
    body = json.dumps(
        {"task": {"id": "x", "status": "COMPLETED"}, "credits": {}, "response": {"text": "a" * 800}}
    )
    now = now_ms()
    pipe = client.pipeline(transaction=False)
    made = []
    for n in range(count):
        task_id = str(uuid.uuid4())
        delivery = first_delivery(task_id)  # as the completing script queues it: in the task hash
        made.append(delivery)
        key, prefix = shard.delivery_record(delivery)
        record = {
            "task": task_id,
            "org": org_id,
            "url": url,
            "event": "msg_" + task_id,
            "body": body,
            "attempts": 0,
            "state": "pending",
            "created": now,
        }
        pipe.hset(key, mapping={"org": org_id, "status": "COMPLETED", "webhook": url})
        pipe.hset(key, mapping={prefix + name: value for name, value in record.items()})
        pipe.zadd(shard.wh_due, {delivery: now})
        pipe.hset(shard.task(task_id), mapping={"wh_state": "pending", "wh_last": delivery})
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return made


def count_delivered(client: redis.Redis, deliveries: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for delivery in deliveries:
        key, prefix = Shard(0).delivery_record(delivery)
        pipe.hget(key, prefix + "state")
    return sum(1 for state in pipe.execute() if state == "delivered")


async def deliver_all(url: str, settings: Settings) -> float:
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    shard_keys = (Shard(0).wh_due, Shard(0).wh_proc)  # one shard in this run
    stop = asyncio.Event()
    started = time.perf_counter()
    loop = asyncio.create_task(run_deliveries(client, settings, stop))
    while sum([await client.zcard(k) for k in shard_keys]) > 0:
        await asyncio.sleep(0.02)
    wall = time.perf_counter() - started
    stop.set()
    await loop
    await client.aclose()
    return wall


def measure(deliveries: int = 20_000, in_flight: int = 300) -> dict[str, float]:
    """Deliver `deliveries` webhooks from one process to a 204 receiver; wall, CPU and delivered count."""
    receiver = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert receiver.stdout is not None
        hook = f"http://127.0.0.1:{int(receiver.stdout.readline())}/hook"
        settings = Settings(
            webhook_allow_networks=["127.0.0.0/8"],
            webhook_require_https=False,
            webhook_concurrency=in_flight,
            webhook_max_per_host=in_flight,  # one receiver here; production keeps the per-host cap
            webhook_claim_batch=64,
        )
        with private_redis() as url:
            client = redis.Redis.from_url(url, decode_responses=True)
            seed(client, hook, 500)
            asyncio.run(deliver_all(url, settings))  # warm-up: imports, scripts, first connections
            made = seed(client, hook, deliveries)
            cpu0 = time.process_time()
            wall = asyncio.run(deliver_all(url, settings))
            cpu = time.process_time() - cpu0
            delivered = count_delivered(client, made)
    finally:
        assert receiver.stdin is not None
        receiver.stdin.close()
        receiver.wait(10)
    return {"wall": wall, "cpu": cpu, "delivered": delivered, "rate": deliveries / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=300)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    figures = measure(args.deliveries, args.in_flight)
    wall, cpu, delivered = figures["wall"], figures["cpu"], int(figures["delivered"])

    rate = args.deliveries / wall
    verdict = "met" if rate >= TARGET_PER_S else "MISSED"
    print(f"machine          : {machine()}")
    print(f"in flight        : {args.in_flight}, {args.deliveries:,} deliveries in {wall:.2f} s")
    print(f"delivered        : {delivered:,} of {args.deliveries:,}")
    print(f"deliveries/s     : {rate:,.0f}   (target >= {TARGET_PER_S:,}/s: {verdict})")
    print(f"CPU per delivery : {cpu * 1000 / args.deliveries:.3f} ms (claim + sign + send + record)")


if __name__ == "__main__":
    main()
