"""Adapter contract: ProviderConfig, ProviderError and the HTTP error classification every adapter shares.

An adapter is ``async run(payload, client, config) -> result dict``. Whatever goes wrong inside it
leaves as exactly one exception type::

    ProviderError(code, retryable, retry_after, status, limit)
    ├── transport      httpx.TimeoutException → PROVIDER_TIMEOUT, other httpx/OS errors → PROVIDER_UNAVAILABLE
    ├── HTTP status    408/409/429/5xx retryable; 401/403 PROVIDER_AUTH_FAILED; other 4xx PROVIDER_REJECTED
    ├── quota          insufficient_quota, per-day QuotaFailure, "run out of searches"
    │                  → PROVIDER_QUOTA_EXHAUSTED
    └── body           unparseable or missing the answer → PROVIDER_INVALID_RESPONSE
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, TypeVar

import httpx
import orjson

from taskq.errors import Code
from taskq.providers.ratelimits import current, go_duration
from taskq.schemas.payloads import Payload


@dataclass(frozen=True)
class ProviderConfig:
    base_url: str
    api_key: str
    model: str
    timeout: float


class ProviderError(Exception):
    """The only exception an adapter raises; the worker decides retry vs fail from its fields."""

    def __init__(
        self,
        code: Code,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        limit: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.limit = limit  # requests/s the provider stated as its limit (x-ratelimit-limit-requests)

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.code.value}, {self.message!r}, retryable={self.retryable}, "
            f"retry_after={self.retry_after}, status={self.status})"
        )


Adapter = Callable[[Payload, httpx.AsyncClient, ProviderConfig], Awaitable[dict[str, Any]]]

P = TypeVar("P")

_RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def invalid(provider: str, why: str) -> ProviderError:
    """A 2xx body we cannot turn into a result: permanent, the same request would get the same body."""
    return ProviderError(
        Code.PROVIDER_INVALID_RESPONSE, f"{provider} returned an unusable body: {why}", retryable=False
    )


def bearer(api_key: str) -> dict[str, str]:
    """Authorization header; none for an empty key ("Bearer " alone is not a legal header value)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def narrow(payload: Payload, model: type[P], provider: str) -> P:
    """Check the worker handed this adapter its own payload model."""
    if not isinstance(payload, model):
        raise ProviderError(
            Code.VALIDATION_ERROR,
            f"{provider} adapter expects {model.__name__}, got {type(payload).__name__}",
            retryable=False,
        )
    return payload


@contextmanager
def boundary(provider: str) -> Iterator[None]:
    """Translate any foreign exception raised inside an adapter into a ProviderError."""
    try:
        yield
    except ProviderError:
        raise
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise ProviderError(
            Code.PROVIDER_TIMEOUT, f"{provider} did not answer in time ({type(exc).__name__})", retryable=True
        ) from exc
    except (httpx.HTTPError, OSError) as exc:
        # httpx-aiohttp maps most aiohttp errors onto httpx ones; OSError covers what slips through.
        raise ProviderError(
            Code.PROVIDER_UNAVAILABLE,
            f"could not reach {provider}: {type(exc).__name__}: {exc}",
            retryable=True,
        ) from exc
    except Exception as exc:
        # Parsing code met a shape it did not expect (KeyError, TypeError, ...): the body is at fault.
        raise invalid(provider, f"{type(exc).__name__}: {exc}") from exc


async def send(
    client: httpx.AsyncClient,
    provider: str,
    config: ProviderConfig,
    method: str,
    url: str,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request with the provider's timeout; return a 2xx response or raise its ProviderError."""
    try:
        response = await client.request(method, _parsed(url), timeout=config.timeout, **kwargs)
    except httpx.TimeoutException as exc:
        if _disguised_connection_error(exc):
            raise ProviderError(
                Code.PROVIDER_UNAVAILABLE,
                f"could not reach {provider}: {type(exc.__cause__).__name__}: {exc}",
                retryable=True,
            ) from exc
        raise ProviderError(
            Code.PROVIDER_TIMEOUT,
            f"{provider} did not answer within {config.timeout:g}s ({type(exc).__name__})",
            retryable=True,
        ) from exc
    except httpx.HTTPError as exc:
        # The message never includes the URL: SerpApi carries its key in the query string.
        raise ProviderError(
            Code.PROVIDER_UNAVAILABLE,
            f"could not reach {provider}: {type(exc).__name__}: {exc}",
            retryable=True,
        ) from exc
    observed = current()
    if observed is not None:  # a worker's call: flow control learns from every response's headers
        observed.headers(response.headers)
    if not response.is_success:
        raise error_from_response(provider, response)
    return response


@lru_cache(maxsize=256)
def _parsed(url: str) -> httpx.URL:
    """Adapters call a handful of endpoint URLs (queries go in params): parse each once, not per call."""
    return httpx.URL(url)


def _disguised_connection_error(exc: httpx.TimeoutException) -> bool:
    """httpx-aiohttp reports every aiohttp connection error (refused, reset) as ConnectTimeout."""
    cause = exc.__cause__
    return type(cause).__module__.startswith("aiohttp") and not isinstance(cause, TimeoutError)


def json_object(provider: str, response: httpx.Response) -> dict[str, Any]:
    """Decode a 2xx JSON object body, or raise PROVIDER_INVALID_RESPONSE."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses and json takes (integers past 64 bits, NaN): rare, never hot
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid(provider, f"not JSON ({_snippet(response.text)})") from exc
    if not isinstance(body, dict):
        raise invalid(provider, f"expected a JSON object, got {type(body).__name__}")
    observed = current()
    if observed is not None:  # the tokens the call used, for a tokens-per-minute limit
        observed.usage(body)
    return body


def error_from_response(provider: str, response: httpx.Response) -> ProviderError:
    """Classify a non-2xx response into retryable or permanent, with the wait the provider asked for."""
    status = response.status_code
    body = _try_json(response)
    kind, message = _describe(body, response)
    detail = f"{provider} returned {status}{f' {kind}' if kind else ''}: {message}"
    wait = retry_after(response.headers, body)
    if wait is None and status == 429:
        wait = go_duration(response.headers.get("x-ratelimit-reset-requests", ""))

    if _quota_exhausted(body, message):
        return ProviderError(Code.PROVIDER_QUOTA_EXHAUSTED, detail, retryable=False, status=status)
    if status in (401, 403) or (status == 400 and _bad_key(body, message)):
        code, retryable = Code.PROVIDER_AUTH_FAILED, False
    elif status == 429:
        code, retryable = Code.PROVIDER_RATE_LIMITED, True
    elif status == 408:
        code, retryable = Code.PROVIDER_TIMEOUT, True
    elif status in _RETRYABLE_STATUS or status >= 500:
        code, retryable = Code.PROVIDER_UNAVAILABLE, True
    else:
        code, retryable = Code.PROVIDER_REJECTED, False
    # OpenAI and Perplexity send x-should-retry to override their own status semantics.
    hint = response.headers.get("x-should-retry", "").lower()
    if hint in ("true", "false"):
        retryable = hint == "true"
    return ProviderError(
        code, detail, retryable=retryable, retry_after=wait if retryable else None, status=status,
        limit=stated_limit(response.headers) if status == 429 else None,
    )  # fmt: skip


def stated_limit(headers: httpx.Headers) -> float | None:
    """Requests per second from ``x-ratelimit-limit-requests`` (OpenAI and xAI: requests per minute)."""
    raw = headers.get("x-ratelimit-limit-requests")
    try:
        per_minute = float(raw) if raw else 0.0
    except ValueError:
        return None
    return per_minute / 60 if per_minute > 0 else None


def retry_after(headers: httpx.Headers, body: Any = None) -> float | None:
    """Seconds to wait: retry-after-ms, then Retry-After (seconds or HTTP-date), then Gemini's RetryInfo."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    for detail in _details(body):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _try_json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _describe(body: Any, response: httpx.Response) -> tuple[str, str]:
    """(kind, message) from each error shape: {error:{code|type|status,message}}, {error:"..."}, HTML."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            kind = error.get("code") if isinstance(error.get("code"), str) else None
            kind = kind or error.get("type") or error.get("status") or ""
            return str(kind), str(error.get("message") or json.dumps(error)[:300])
        if isinstance(error, str):
            return "", error
        if isinstance(body.get("detail"), str):
            return "", body["detail"]
    return "", _snippet(response.text) or response.reason_phrase or "empty body"


def _details(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        details = body["error"].get("details")
        if isinstance(details, list):
            return [d for d in details if isinstance(d, dict)]
    return []


def _quota_exhausted(body: Any, message: str) -> bool:
    """Out of money or out of a daily allowance: retrying within the task's lifetime cannot help."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        if "insufficient_quota" in (error.get("type"), error.get("code")):
            return True
    for detail in _details(body):
        if str(detail.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            for violation in detail.get("violations") or []:
                quota_id = str(violation.get("quotaId", "")) if isinstance(violation, dict) else ""
                if "perday" in quota_id.lower():
                    return True
    return "run out of searches" in message.lower()


def _bad_key(body: Any, message: str) -> bool:
    reasons = {str(d.get("reason")) for d in _details(body)}
    lowered = message.lower()
    return "API_KEY_INVALID" in reasons or "api key not valid" in lowered or "incorrect api key" in lowered


def _snippet(text: str) -> str:
    """A short, single-line view of a non-JSON body: its <title> if HTML, else its first characters."""
    title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    plain = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
    return " ".join(plain.split())[:200]
