"""Benchmark: client CPU per adapter call with 1,000 calls in flight, httpx-aiohttp vs httpx's own transport.

Starts the provider simulator in a subprocess (1 s latency, so every call is in flight at once), then runs
the same mixed batch of adapter calls (all eight task types, round-robin) through one shared
httpx.AsyncClient per transport. CPU is this process's time.process_time(), so the simulator's work is
not counted. Not a test: run it by hand.

    python bench/adapters.py [--calls 1000] [--latency 1.0] [--types GEMINI,GOOGLE_NEWS]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from taskq.providers import (  # noqa: E402
    ADAPTERS,
    PAYLOAD_MODELS,
    ProviderConfig,
)

PAYLOADS: dict[str, dict[str, Any]] = {
    "CHATGPT": {"prompt": "best bakeries in Leeds", "country": "GB"},
    "GEMINI": {"prompt": "history of the croissant", "country": "FR", "include": {"markdown": True}},
    "PERPLEXITY": {"prompt": "how geysers work", "country": "US"},
    "GROK": {"prompt": "latest rover news", "country": "DE"},
    "GOOGLE": {"query": "coffee grinder", "country": "GB"},
    "GOOGLE_NEWS": {"query": "electric buses", "country": "GB"},
    "AIMODE": {"prompt": "how heat pumps work", "country": "US"},
    "COPILOT": {"prompt": "asyncio TaskGroup", "country": "US"},
}
MODELS = {"CHATGPT": "gpt-5-mini", "GEMINI": "gemini-2.5-flash", "PERPLEXITY": "sonar", "GROK": "grok-4-fast"}
DEADLINE = 50.0  # seconds per transport, so the whole run stays under two minutes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_simulator(port: int, latency: float) -> subprocess.Popen[bytes]:
    code = f"from taskq.simulator.app import serve; serve('127.0.0.1', {port}, '{latency}', 0.0)"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the simulator did not start")


async def batch(client: httpx.AsyncClient, url: str, calls: int, types: list[str]) -> int:
    """Run `calls` adapter calls at once, cycling through `types`; return how many failed."""
    payloads = {t: PAYLOAD_MODELS[t].model_validate(p) for t, p in PAYLOADS.items()}
    configs = {t: ProviderConfig(url, "sk-bench", MODELS.get(t, ""), 30.0) for t in types}
    jobs = [
        ADAPTERS[t](payloads[t], client, configs[t]) for t in (types[i % len(types)] for i in range(calls))
    ]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    return sum(isinstance(r, BaseException) for r in results)


async def measure(name: str, client: httpx.AsyncClient, url: str, calls: int, types: list[str]) -> None:
    async with client:
        await batch(client, url, 16, types)  # warm-up: imports, first connections
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            failed = await asyncio.wait_for(batch(client, url, calls, types), DEADLINE)
        except TimeoutError:
            print(f"{name:>16}: did not finish {calls} calls within {DEADLINE:.0f}s")
            return
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"{name:>16}: {cpu / calls * 1000:6.2f} CPU ms/call  wall {wall:5.2f}s  "
        f"{calls / wall:7.1f} calls/s  failed {failed}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--types", default=",".join(PAYLOADS), help="comma-separated task types to cycle")
    args = parser.parse_args()
    types = args.types.split(",")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_simulator(port, args.latency)
    limits = httpx.Limits(max_connections=args.calls, max_keepalive_connections=args.calls)
    print(f"{args.calls} concurrent adapter calls ({args.types}), simulator latency {args.latency}s, {url}")
    aiohttp_client = httpx.AsyncClient(transport=AiohttpTransport(limits=limits))
    try:
        asyncio.run(measure("httpx-aiohttp", aiohttp_client, url, args.calls, types))
        asyncio.run(measure("httpx default", httpx.AsyncClient(limits=limits), url, args.calls, types))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
