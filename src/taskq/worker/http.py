"""The drain's provider HTTP client: httpx's API for the adapters, one aiohttp session doing the calls.

Adapters speak httpx (``client.request(...) -> httpx.Response``; tests hand them an
``httpx.MockTransport``). In a drain the same call goes straight to one aiohttp session: the request
is not built as an httpx.Request, the body is not streamed through httpx's layers, and the answer
becomes an httpx.Response holding the bytes already read. Under a profiler at 200 calls in flight the
httpx layers over the aiohttp transport cost about 30% of a drain's CPU. Foreign errors become the
httpx errors the adapters' boundary (providers/base.py ``send``) already classifies.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import httpx
import orjson
from yarl import URL

from taskq import __version__

#: What every provider call says it is.
USER_AGENT = f"taskq/{__version__}"

#: aiohttp errors and the httpx error each becomes (the first match in this order wins).
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (asyncio.TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.ClientError, httpx.NetworkError),
    (OSError, httpx.NetworkError),
)


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        return None


_NO_COOKIES = _NoCookies()


class ProviderClient(httpx.AsyncClient):
    """An httpx client that keeps no cookies and says it is taskq.

    Provider APIs authenticate by key and need none, and one jar shared by every tenant's calls is
    not wanted anyway; httpx would otherwise parse each response for Set-Cookie through urllib's
    cookie machinery, about a third of its own CPU per call. APIs behind a CDN may turn a request
    with no User-Agent away, so every call carries USER_AGENT.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.headers["User-Agent"] = USER_AGENT

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        if cookies:
            raise ValueError("ProviderClient keeps no cookies")


class DirectClient(ProviderClient):
    """``request`` goes straight to one aiohttp session; everything else is httpx's AsyncClient.

    Takes what the adapters pass (params, headers, json, content, timeout); a call with any other
    option goes the plain httpx way. Redirects are not followed, as httpx does not by default.
    Like httpx, it goes through the proxy that ``HTTPS_PROXY`` / ``HTTP_PROXY`` name, except to the
    hosts ``NO_PROXY`` lists; they are read once (aiohttp's own ``trust_env`` would read them, and
    ~/.netrc, on a thread for every request).
    """

    def __init__(self, connections: int) -> None:
        super().__init__()
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._proxies = getproxies()  # scheme -> proxy URL, and "no" -> NO_PROXY, from the environment
        self._proxy_of: dict[str, str | None] = {}  # URL -> the proxy it goes through

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=0, ttl_dns_cache=300)
        # The body reaches the adapter as httpx reads it: compressed bytes and their Content-Encoding
        # go to httpx.Response, which decodes them, so the encodings offered are httpx's own.
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            headers={name: self.headers[name] for name in ("Accept-Encoding", "User-Agent")},
        )
        return self._session

    async def request(  # type: ignore[override]
        self,
        method: str,
        url: httpx.URL | str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> httpx.Response:
        if options or not isinstance(timeout, int | float | None):
            return await super().request(method, url, params=params, headers=headers, json=json,
                                         content=content, timeout=timeout, **options)  # fmt: skip
        session = self._session or self._open()
        data = content
        if json is not None:
            data = orjson.dumps(json)
            headers = {**(headers or {}), "Content-Type": "application/json"}
        try:
            target = str(url)
            proxy = self._proxy(target) if self._proxies else None
            call = session.request(method, _url(target), params=params, headers=headers, data=data,
                                   timeout=_timeout(timeout), allow_redirects=False, proxy=proxy)  # fmt: skip
            async with call as answer:
                body = await answer.read()
                return httpx.Response(answer.status, headers=answer.raw_headers, content=body)
        except aiohttp.InvalidURL as exc:
            raise httpx.UnsupportedProtocol(f"invalid URL: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            for foreign, ours in _ERRORS:
                if isinstance(exc, foreign):
                    raise ours(f"{type(exc).__name__}: {exc}") from exc
            raise  # pragma: no cover - OSError is the last entry

    def _proxy(self, url: str) -> str | None:
        """The proxy a URL goes through (None: straight), as urllib reads the environment."""
        if url not in self._proxy_of:
            if len(self._proxy_of) >= 256:  # adapters call a handful of endpoint URLs: rarely reached
                self._proxy_of.clear()
            parts = urlsplit(url)
            proxy = self._proxies.get(parts.scheme)
            if proxy is not None and proxy_bypass(parts.hostname or ""):
                proxy = None
            self._proxy_of[url] = proxy
        return self._proxy_of[url]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        await super().aclose()


@lru_cache(maxsize=256)
def _url(url: str) -> URL:
    """Adapters call a handful of endpoint URLs (queries go in params): parse each once."""
    return URL(url)


@lru_cache(maxsize=64)
def _timeout(seconds: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def http_client(connections: int, transport: str = "aiohttp") -> httpx.AsyncClient:
    """The adapters' client: the direct aiohttp path, or httpx's own pool (``transport="httpx"``)."""
    if transport == "httpx":
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return ProviderClient(limits=limits)
    return DirectClient(connections)
