"""Provider simulator: one aiohttp app speaking every upstream wire format, with latency and injected faults.

It is a stand-in for load tests and end-to-end tests, never a provider: every response carries
``x-simulator: taskq`` and generated answers say "[simulated]".

Paths and auth match the real APIs (Bearer, x-goog-api-key, api_key query; 401 when missing).
OpenAI and xAI share POST /v1/responses; a model starting with "grok" gets the xAI flavor.

Faults come at random (``error_rate``: 429, 500, 503, timeout, malformed body) or per request, from a
marker anywhere in the prompt or query, which keeps tests deterministic:

    [sim:429] [sim:500] [sim:503] [sim:400] [sim:401] [sim:410] [sim:quota] [sim:malformed]
    [sim:timeout]         hang until the client gives up (or timeout_seconds pass)
    [sim:empty]           an answer with no text / no results (Gemini: no groundingMetadata)
    [sim:429-once:TOKEN]  fail the first request carrying TOKEN, succeed afterwards (any kind-once)

Limits, per flavor and API key (as separate accounts would have them), answered before any latency as
upstream rate limiters do:

    rate_limit N   N requests/s (a token bucket holding one second's worth); above it each flavor's
                   own 429: OpenAI/xAI with retry-after(-ms) and x-ratelimit-* headers (on their
                   successes too: the limit per minute, requests remaining, time until full), Gemini
                   RESOURCE_EXHAUSTED with a per-minute QuotaFailure and RetryInfo, Perplexity 429,
                   SerpApi's hourly throughput message
    quota N        N calls served, then each flavor's quota-exhausted error
    revoked keys   these keys get the flavor's 401
GET /sim/calls lists every request as [time ms, flavor, key fingerprint, status] (the newest 200,000).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from taskq.simulator.bodies import Ask, Reply, success
from taskq.simulator.faults import failure, rate_limited

log = logging.getLogger("taskq.simulator")

KINDS = frozenset({"429", "500", "503", "400", "401", "410", "quota", "malformed", "timeout", "empty"})
RANDOM_FAULTS = ("429", "500", "503", "timeout", "malformed")
_MARKER = re.compile(r"\[sim:([a-z0-9]+)(-once:([^\]\s]{1,80}))?\]")
_SERPAPI_ENGINES = frozenset({"google", "google_ai_mode", "bing_copilot"})


def parse_latency(spec: str | float) -> Callable[[random.Random], float]:
    """Seconds per response: a number, "uniform:LOW,HIGH" or "exp:MEAN"."""
    if isinstance(spec, int | float) or re.fullmatch(r"\s*\d+(\.\d+)?\s*", str(spec)):
        fixed = float(spec)
        return lambda _rng: fixed
    name, _, args = str(spec).partition(":")
    try:
        values = [float(v) for v in args.split(",")]
        if name == "uniform" and len(values) == 2:
            low, high = values
            return lambda rng: rng.uniform(low, high)
        if name == "exp" and len(values) == 1 and values[0] > 0:
            mean = values[0]
            return lambda rng: rng.expovariate(1 / mean)
    except ValueError:
        pass
    raise ValueError(f"latency must be SECONDS, uniform:LOW,HIGH or exp:MEAN, got {spec!r}")


@dataclass
class SimState:
    latency: Callable[[random.Random], float]
    error_rate: float
    rng: random.Random
    timeout_seconds: float
    seen: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    rate_limit: float = 0.0
    quota: int = 0
    revoked: frozenset[str] = frozenset()
    limit_headers: bool = True  # OpenAI/xAI successes carry x-ratelimit-* headers under a rate limit
    buckets: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # tokens, at
    served: Counter[tuple[str, str]] = field(default_factory=Counter)
    calls: deque[tuple[int, str, str, int]] = field(default_factory=lambda: deque(maxlen=200_000))

    def take(self, flavor: str, key: str) -> float:
        """0 when this account may call now (a token taken), else seconds until it may."""
        now = time.monotonic()
        capacity = max(1.0, self.rate_limit)
        tokens, at = self.buckets.get((flavor, key), (capacity, now))
        tokens = min(capacity, tokens + (now - at) * self.rate_limit)
        if tokens >= 1.0:
            self.buckets[(flavor, key)] = (tokens - 1.0, now)
            return 0.0
        self.buckets[(flavor, key)] = (tokens, now)
        return (1.0 - tokens) / self.rate_limit

    def rate_headers(self, flavor: str, key: str) -> dict[str, str]:
        """OpenAI's x-ratelimit-*-requests headers of a served call (xAI's are the same); others send none."""
        if not self.rate_limit or not self.limit_headers or flavor not in ("openai", "xai"):
            return {}
        tokens, _ = self.buckets.get((flavor, key), (max(1.0, self.rate_limit), 0.0))
        full_ms = math.ceil((max(1.0, self.rate_limit) - tokens) / self.rate_limit * 1000)
        return {
            "x-ratelimit-limit-requests": f"{self.rate_limit * 60:g}",
            "x-ratelimit-remaining-requests": str(int(tokens)),
            "x-ratelimit-reset-requests": f"{full_ms}ms" if full_ms < 1000 else f"{full_ms / 1000:g}s",
        }


STATE = web.AppKey("taskq_simulator", SimState)


def create_app(
    latency: str | float = 0.0,
    error_rate: float = 0.0,
    seed: int | None = None,
    *,
    timeout_seconds: float = 600.0,
    rate_limit: float = 0.0,
    quota: int = 0,
    revoked: tuple[str, ...] = (),
    limit_headers: bool = True,
) -> web.Application:
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error_rate must be between 0 and 1, got {error_rate!r}")
    if rate_limit < 0 or quota < 0:
        raise ValueError("rate_limit and quota must be >= 0")
    app = web.Application()
    app[STATE] = SimState(parse_latency(latency), error_rate, random.Random(seed), timeout_seconds,
                          rate_limit=rate_limit, quota=quota, revoked=frozenset(revoked),
                          limit_headers=limit_headers)  # fmt: skip
    app.router.add_post("/v1/responses", _responses)
    app.router.add_post("/v1beta/models/{target}", _gemini)
    app.router.add_post("/chat/completions", _perplexity)
    app.router.add_get("/search.json", _serpapi)
    app.router.add_get("/rss/search", _rss)
    app.router.add_get("/goto", _goto)
    app.router.add_get("/url", _goto)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/sim/calls", _calls)
    app.on_response_prepare.append(_stamp)
    return app


def serve(
    host: str,
    port: int,
    latency: str,
    error_rate: float,
    *,
    rate_limit: float = 0.0,
    quota: int = 0,
    revoked: tuple[str, ...] = (),
    limit_headers: bool = True,
) -> None:
    """Run the simulator until interrupted (blocking); prints the URL to point upstream_base_url at."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(
        latency, error_rate, rate_limit=rate_limit, quota=quota, revoked=revoked, limit_headers=limit_headers
    )
    url = f"http://{host}:{port}"

    def announce(_message: str) -> None:
        print(f"taskq provider SIMULATOR (fake upstreams, not real providers) listening on {url}", flush=True)
        print(f"  latency={latency} error_rate={error_rate} rate_limit={rate_limit or 'none'}/s "
              f"quota={quota or 'none'}; set TASKQ_UPSTREAM_BASE_URL={url}", flush=True)  # fmt: skip

    log.warning("starting the provider simulator: answers are simulated, not from real providers")
    web.run_app(
        app,
        host=host,
        port=port,
        print=announce,
        access_log=None,
        handler_cancellation=True,
        backlog=4096,
        loop=_event_loop(),
    )


def _event_loop() -> asyncio.AbstractEventLoop | None:
    """uvloop's loop where it is installed, else None (asyncio's own). Every worker benchmarked
    against the simulator waits on its loop: at 1,000 calls in flight asyncio's loop cost it 10-25 %
    more CPU per request, and answers leave later when calls end in bunches."""
    try:
        import uvloop
    except ImportError:  # a platform without uvloop wheels
        return None
    return uvloop.new_event_loop()


async def _stamp(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["x-simulator"] = "taskq"


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"simulator": "taskq", "counts": dict(request.app[STATE].counts)})


async def _calls(request: web.Request) -> web.Response:
    return web.json_response({"calls": list(request.app[STATE].calls)})


def _bearer(request: web.Request) -> str:
    """The Bearer key, "" when there is none."""
    header = request.headers.get("Authorization", "")
    return header[len("Bearer ") :] if header.startswith("Bearer ") else ""


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _located(instruction: str) -> str:
    """The location an adapter stated in a system instruction ("... located in CA, US ...")."""
    match = re.search(r"located in ([A-Z]{2}(?:, [A-Z]{2})?)", instruction)
    return match.group(1) if match else ""


def _prompt(messages: Any) -> str:
    """The last user message's text from an OpenAI-style input/messages list (or a bare string)."""
    if isinstance(messages, str):
        return messages
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role", "user") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


async def _responses(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if body is None:
        return _bad_json("openai")
    model = str(body.get("model") or "")
    flavor = "xai" if model.startswith("grok") else "openai"
    tools = body.get("tools") or [{}]
    country = str((tools[0].get("user_location") or {}).get("country") or "")
    if flavor == "xai":
        system = [m for m in body.get("input") or [] if isinstance(m, dict) and m.get("role") == "system"]
        country = _located(str(system[0].get("content", ""))) if system else ""
    echo: dict[str, Any] = {k: body[k] for k in ("tools", "tool_choice", "store") if k in body}
    ask = Ask(flavor, _prompt(body.get("input")), model=model, country=country, echo=echo)
    return await _answer(request, ask, _bearer(request), json.dumps(body))


async def _gemini(request: web.Request) -> web.Response:
    model, _, method = request.match_info["target"].partition(":")
    body = await _json_body(request)
    if method != "generateContent":
        return _send(Reply(404, b'{"error":{"code":404,"status":"NOT_FOUND","message":"[simulated]"}}'))
    if body is None:
        return _bad_json("gemini")
    texts = [p.get("text", "") for c in body.get("contents") or [] for p in c.get("parts") or []]
    system = [p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts") or []]
    ask = Ask("gemini", " ".join(texts), model=model, country=_located(" ".join(system)))
    key = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
    return await _answer(request, ask, key, json.dumps(body))


async def _perplexity(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if body is None:
        return _bad_json("perplexity")
    location = (body.get("web_search_options") or {}).get("user_location") or {}
    ask = Ask(
        "perplexity", _prompt(body.get("messages")), str(body.get("model") or ""), location.get("country", "")
    )
    return await _answer(request, ask, _bearer(request), json.dumps(body))


async def _serpapi(request: web.Request) -> web.Response:
    params = {k: v for k, v in request.query.items() if k != "api_key"}
    ask = Ask("serpapi", params.get("q", ""), country=params.get("gl", ""), params=params)
    if params.get("engine") not in _SERPAPI_ENGINES:
        return _send(Reply(400, b'{"error": "Unsupported `engine` parameter. [simulated]"}'))
    if not params.get("q"):
        return _send(failure(ask, "400"))
    return await _answer(request, ask, request.query.get("api_key", ""), params["q"])


async def _rss(request: web.Request) -> web.Response:
    params = dict(request.query)
    ask = Ask("rss", params.get("q", ""), country=params.get("gl", ""), params=params)
    return await _answer(request, ask, None, params.get("q", ""))


async def _goto(request: web.Request) -> web.Response:
    """Google's redirect links (/goto?url=, /url?q=): a 302 to the destination, as Google answers. A
    destination that is not a URL is made one; a link carrying [sim:404] gets a 404 page instead."""
    token = request.query.get("url") or request.query.get("q") or ""
    if not token or "[sim:404]" in token:
        request.app[STATE].counts["goto-404"] += 1
        return web.Response(status=404, text="Not Found [simulated]")
    request.app[STATE].counts["goto"] += 1
    destination = token if token.startswith(("http://", "https://")) else (
        "https://example.com/simulated/" + re.sub(r"[^A-Za-z0-9_-]", "", token)[:200])  # fmt: skip
    return web.Response(status=302, headers={"Location": destination})


def _bad_json(flavor: str) -> web.Response:
    return _send(failure(Ask(flavor, ""), "400"))


def _send(reply: Reply) -> web.Response:
    headers = {**reply.headers, "Content-Type": f"{reply.content_type}; charset=utf-8"}
    return web.Response(status=reply.status, body=reply.body, headers=headers)


def _fault(state: SimState, scanned: str) -> tuple[str | None, bool]:
    """(fault kind or None, empty answer?) from markers in the request, else from the random error rate."""
    fault, empty = None, False
    for kind, once, token in _MARKER.findall(scanned):
        if kind not in KINDS:
            continue
        if kind == "empty":
            empty = True
        elif once:
            if token not in state.seen:
                state.seen.add(token)
                fault = kind
        else:
            fault = kind
    if fault is None and state.error_rate and state.rng.random() < state.error_rate:
        fault = state.rng.choice(RANDOM_FAULTS)
    return fault, empty


async def _answer(request: web.Request, ask: Ask, key: str | None, scanned: str) -> web.Response:
    """Answer one request; key None for a flavor without keys (RSS)."""
    state = request.app[STATE]
    fp = hashlib.sha256(key.encode()).hexdigest()[:6] if key else "-"
    limited = _limited(state, ask, key, fp)
    if limited is not None:
        state.calls.append((int(time.time() * 1000), ask.flavor, fp, limited.status))
        return _send(limited)
    state.calls.append((int(time.time() * 1000), ask.flavor, fp, 200))
    fault, empty = _fault(state, scanned)
    delay = state.latency(state.rng)
    if delay > 0:
        await asyncio.sleep(delay)
    state.counts[fault or "ok"] += 1
    if fault == "timeout":
        log.info("simulator: holding a %s request open to force a client timeout", ask.flavor)
        await _hang(request, state.timeout_seconds)
        return _send(Reply(504, b'{"error": "simulated timeout"}'))
    if fault:
        log.info("simulator: injected %s fault into a %s response", fault, ask.flavor)
        return _send(failure(ask, fault))
    if empty:
        ask = replace(ask, empty=True)
    reply = success(ask)
    if state.rate_limit:
        reply = replace(reply, headers={**reply.headers, **state.rate_headers(ask.flavor, fp)})
    return _send(reply)


def _limited(state: SimState, ask: Ask, key: str | None, fp: str) -> Reply | None:
    """The answer of a missing or revoked key, a rate limit or an exhausted quota; None to serve it."""
    if key is not None and (not key or key in state.revoked):
        state.counts["401"] += 1
        return failure(ask, "401")
    account = (ask.flavor, fp)
    if state.rate_limit:
        wait = state.take(*account)
        if wait > 0:
            state.counts["rate_limited"] += 1
            return rate_limited(ask, wait, state.rate_limit)
    if state.quota:
        if state.served[account] >= state.quota:
            state.counts["quota"] += 1
            return failure(ask, "quota")
        state.served[account] += 1
    return None


async def _hang(request: web.Request, seconds: float) -> None:
    """Sleep, but stop as soon as the client hangs up so a timed-out test does not keep the server busy."""
    remaining = seconds
    while remaining > 0:
        await asyncio.sleep(min(0.2, remaining))
        remaining -= 0.2
        if request.transport is None or request.transport.is_closing():
            return
