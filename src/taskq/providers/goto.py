"""Google redirect links (/goto, /url) resolved to their destination: Google answers with a redirect.

Only the path and query of the link are sent, always to the configured Google base URL, so a client
cannot make the resolver call any other host. Redirects are read, never followed.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from taskq.errors import Code
from taskq.providers.base import ProviderError

PATHS = ("/goto", "/url")


def link_problem(url: str) -> str | None:
    """Why `url` is not a Google redirect link this resolver takes, or None."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not (
        host == "google.com" or host.startswith(("google.", "www.google."))
    ):
        return "url must be a Google redirect link (https://www.google.com/goto?url=... or /url?q=...)"
    if parts.path not in PATHS:
        return "url must point at /goto or /url on a Google host"
    if not parts.query:
        return "url has no query: nothing to resolve"
    return None


def resolve(url: str, client: httpx.Client, base_url: str, timeout: float) -> str:
    """The destination of a Google redirect link (checked with ``link_problem`` first).

    Raises ProviderError when Google does not answer with a redirect in time.
    """
    parts = urlsplit(url)
    target = f"{base_url.rstrip('/')}{parts.path}?{parts.query}"
    try:
        response = client.get(target, follow_redirects=False, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise ProviderError(Code.PROVIDER_TIMEOUT, f"Google did not answer within {timeout:g} s",
                            retryable=True) from exc  # fmt: skip
    except httpx.HTTPError as exc:
        raise ProviderError(Code.PROVIDER_UNAVAILABLE, f"goto resolve request failed: {type(exc).__name__}",
                            retryable=True) from exc  # fmt: skip
    location = str(response.headers.get("location", ""))
    if response.is_redirect and location.startswith(("http://", "https://")):
        return location
    if response.status_code == 200 and parts.path == "/url":
        # Google's interstitial for /url links: the destination is the q= (or url=) parameter.
        query = parse_qs(parts.query)
        for name in ("q", "url"):
            value = str((query.get(name) or [""])[0])
            if value.startswith(("http://", "https://")):
                return value
    raise ProviderError(
        Code.PROVIDER_INVALID_RESPONSE,
        f"goto resolve request failed: Google answered {response.status_code} without a redirect",
        retryable=False,
        status=response.status_code,
    )
