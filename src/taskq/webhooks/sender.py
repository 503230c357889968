"""Delivery of one webhook attempt over an SSRF-checked, address-pinned connection, and the retry delay.

httpx is the client API; the httpx-aiohttp transport carries it over one aiohttp session whose
DNS resolver runs the SSRF check and hands the connector only the addresses it checked, so there
is no second lookup to rebind (TLS still verifies and sends SNI for the hostname).

Requests go straight to the transport (``handle_async_request``), not through ``AsyncClient.send``:
its auth, redirect, cookie and event-hook layers do nothing for a webhook (no auth, redirects are
not followed, no cookies) and cost about a third of the CPU of a delivery at 1,000 deliveries/s.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, Self

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from httpx_aiohttp import AiohttpTransport

from taskq.errors import UnsafeTarget
from taskq.webhooks.ssrf import (
    Network,
    Resolver,
    check_address,
    check_url_syntax,
    resolve_host,
    system_resolve,
)

Outcome = Literal["delivered", "retry", "gone", "blocked"]

MAX_RETRY_AFTER = 86_400.0  # a receiver cannot park a delivery for longer than a day
CHECKED_URLS = 4096  # webhook urls whose syntax (and literal address) check is remembered


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt did; `outcome` tells the caller what to do next."""

    status: int | None
    error: str | None
    duration_ms: int
    retry_after: float | None
    outcome: Outcome


class _CheckingResolver(AbstractResolver):
    """aiohttp resolver that refuses unsafe hosts and returns only the addresses it checked."""

    def __init__(self, allow: Sequence[Network], resolver: Resolver | None) -> None:
        self._allow = allow
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        async def lookup(name: str, number: int) -> list[str]:
            return await system_resolve(name, number, family)

        addresses = await resolve_host(host, port, self._allow, self._resolver or lookup)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), capped at a day."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() is true too, and float() refuses it
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000" means UTC with no claim about local time
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _classify(status: int, response_headers: httpx.Headers) -> tuple[str | None, float | None, Outcome]:
    if 200 <= status < 300:
        return None, None, "delivered"
    if status == 410:
        return "HTTP 410 Gone: the receiver asked for no more deliveries", None, "gone"
    if 300 <= status < 400:
        location = response_headers.get("location", "?")[:200]  # the receiver controls its length
        return f"HTTP {status} redirect to {location} not followed; fix the webhook url", None, "retry"
    retry_after = parse_retry_after(response_headers.get("retry-after")) if status in (429, 503) else None
    return f"HTTP {status}", retry_after, "retry"


def _describe(exc: Exception) -> str:
    # httpx-aiohttp re-labels aiohttp errors loosely (a refused connection becomes
    # "ConnectTimeout"); the aiohttp error underneath names the real trouble.
    cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) and exc.__cause__ is not None else exc
    return f"{type(cause).__name__}: {cause}"


def next_delay(
    attempt: int, schedule: Sequence[float], retry_after: float | None, rng: random.Random | None = None
) -> float | None:
    """Seconds to wait after failed attempt number `attempt` (1-based), or None when the schedule is spent.

    `schedule[attempt - 1]` is the nominal delay. The jitter keeps between 50% and 100% of it
    ("equal jitter"): full jitter down to zero would let a retry storm re-align on a dead
    receiver with no back-off at all. A receiver's Retry-After is a floor, never shortened.
    """
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    if attempt > len(schedule):
        return None
    draw = rng.random() if rng is not None else random.random()
    delay = schedule[attempt - 1] * (0.5 + 0.5 * draw)
    return delay if retry_after is None else max(delay, retry_after)


class WebhookSender:
    """Sends webhook attempts; one per worker process, hundreds of attempts in flight.

    Use as `async with WebhookSender(...) as sender: attempt = await sender.send(...)`.
    """

    def __init__(
        self,
        allow: Sequence[Network] = (),
        *,
        require_https: bool = True,
        timeout: float = 15.0,
        max_connections: int = 256,
        max_per_host: int | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        """`resolver` replaces getaddrinfo (tests); its answers are checked like any other."""
        self._allow = tuple(allow)
        self._require_https = require_https
        self._timeout = timeout
        self._max_connections = max_connections
        # One hanging receiver must not hold every connection: by default it gets a quarter.
        self._max_per_host = max_per_host if max_per_host is not None else max(1, max_connections // 4)
        self._resolver = resolver
        self._transport: AiohttpTransport | None = None
        self._timeouts = {"connect": min(timeout, 10.0), "read": timeout, "write": timeout, "pool": timeout}
        self._checked: dict[str, httpx.URL] = {}  # url -> its parsed form, once it passed the checks

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(
            resolver=_CheckingResolver(self._allow, self._resolver),
            limit=self._max_connections,
            limit_per_host=self._max_per_host,
            ssl=httpx.create_ssl_context(),
        )
        # No environment proxies (they would bypass the pinned address) and no cookies (two
        # organizations can share a receiver host; one must not see the other's cookies).
        session = aiohttp.ClientSession(
            connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        self._transport = AiohttpTransport(client=session)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    async def send(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        """POST one signed body; never raises for network trouble, the Attempt says what happened."""
        started = time.perf_counter()

        def attempt(
            status: int | None, error: str | None, retry_after: float | None, outcome: Outcome
        ) -> Attempt:
            return Attempt(status, error, int((time.perf_counter() - started) * 1000), retry_after, outcome)

        try:
            async with asyncio.timeout(self._timeout):  # one deadline for connect, send and headers
                status, response_headers = await self._post(url, body, headers)
        except UnsafeTarget as exc:
            return attempt(None, str(exc), None, "blocked")
        except httpx.InvalidURL as exc:
            return attempt(None, f"webhook url is not a valid url: {exc}", None, "blocked")
        except TimeoutError:
            return attempt(None, f"timed out after {self._timeout:g} s", None, "retry")
        except (httpx.HTTPError, aiohttp.ClientError, OSError) as exc:
            return attempt(None, _describe(exc), None, "retry")
        error, retry_after, outcome = _classify(status, response_headers)
        return attempt(status, error, retry_after, outcome)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, httpx.Headers]:
        if self._transport is None:
            raise RuntimeError("WebhookSender is used outside `async with`")
        target = self._checked.get(url) or self._check(url)
        request = httpx.Request(
            "POST", target, headers=headers, content=body, extensions={"timeout": self._timeouts}
        )
        response = await self._transport.handle_async_request(request)
        # The body is never read: a small one is already buffered (the connection is reused),
        # a large one is dropped with its connection instead of downloaded.
        await response.aclose()
        return response.status_code, response.headers

    def _check(self, url: str) -> httpx.URL:
        """Check a url once (syntax, a literal address); a name is checked by the resolver per connect."""
        check_url_syntax(url, self._require_https)
        target = httpx.URL(url)
        # aiohttp skips its resolver for a literal IP, so that case is checked here, on the
        # host exactly as httpx will hand it to aiohttp.
        host, _ = check_url_syntax(str(target), self._require_https)
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None  # a name: the resolver checks it
        if literal is not None:
            check_address(literal, self._allow)
        if len(self._checked) >= CHECKED_URLS:
            self._checked.clear()
        self._checked[url] = target
        return target
