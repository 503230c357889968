"""What an upstream response says about its rate limits and the tokens a call used.

OpenAI (and xAI, OpenAI-compatible) send on every response, success or refusal::

    x-ratelimit-limit-requests: 500        requests per minute
    x-ratelimit-remaining-requests: 499
    x-ratelimit-reset-requests: 120ms      Go-style duration until the limit is back to full
    x-ratelimit-limit-tokens / -remaining-tokens / -reset-tokens   the same for tokens per minute

Gemini, Perplexity and SerpApi send none of these. The tokens a call used come from its body:
``usage.total_tokens`` (OpenAI Responses, xAI, Perplexity) or ``usageMetadata.totalTokenCount``
(Gemini).

``send`` (providers/base.py) notes the headers of every response and ``json_object`` the usage of every
2xx body into the ``Observed`` of the call in progress, when the worker started one (``observe()``);
elsewhere (tests, the API) nothing is noted and nothing is parsed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SCALE = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def go_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``1s``, ``6m0s``, ``12ms``), as OpenAI's x-ratelimit-reset-*."""
    text = text.strip()
    parts = _GO_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _SCALE[u] for n, u in parts)


def _count(raw: str | None) -> float | None:
    """A non-negative number of a header, None when absent or not a plain number."""
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value >= 0 and value == value and value != float("inf") else None


@dataclass(slots=True)
class Limit:
    """One x-ratelimit family (requests or tokens): its limit per minute, what remains, when it is full."""

    per_minute: float | None = None
    remaining: float | None = None
    reset: float | None = None  # seconds

    @property
    def per_second(self) -> float | None:
        return self.per_minute / 60 if self.per_minute else None


@dataclass(slots=True)
class Observed:
    """What one call's responses said: the request and token limits, and the tokens it used."""

    requests: Limit | None = None
    tokens: Limit | None = None
    used: int | None = None  # tokens the call used, as the upstream counted them

    def headers(self, headers: Mapping[str, str]) -> None:
        """Note the x-ratelimit-* headers of a response (nothing when it has none)."""
        if "x-ratelimit-limit-requests" in headers or "x-ratelimit-remaining-requests" in headers:
            self.requests = _limit(headers, "requests")
        if "x-ratelimit-limit-tokens" in headers or "x-ratelimit-remaining-tokens" in headers:
            self.tokens = _limit(headers, "tokens")

    def usage(self, body: Mapping[str, Any]) -> None:
        """Note the tokens a 2xx body says the call used."""
        usage = body.get("usage")
        total = usage.get("total_tokens") if isinstance(usage, dict) else None
        if total is None:
            meta = body.get("usageMetadata")
            total = meta.get("totalTokenCount") if isinstance(meta, dict) else None
        if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
            self.used = total


def _limit(headers: Mapping[str, str], family: str) -> Limit:
    reset = headers.get(f"x-ratelimit-reset-{family}")
    return Limit(
        per_minute=_count(headers.get(f"x-ratelimit-limit-{family}")) or None,
        remaining=_count(headers.get(f"x-ratelimit-remaining-{family}")),
        reset=go_duration(reset) if reset else None,
    )


_CURRENT: ContextVar[Observed | None] = ContextVar("taskq_observed", default=None)


def observe() -> Observed:
    """Start noting what the responses of the call about to run (in this asyncio task) say."""
    observed = Observed()
    _CURRENT.set(observed)
    return observed


def current() -> Observed | None:
    """The Observed of the call in progress, None outside a worker's call."""
    return _CURRENT.get()
