"""The drain's provider client: httpx's API on one aiohttp session, against a real loopback server."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web

from taskq.errors import Code
from taskq.providers import ADAPTERS, ProviderConfig, ProviderError
from taskq.providers.base import send
from taskq.schemas.payloads import ChatGPTPayload
from taskq.worker.http import USER_AGENT, DirectClient, http_client

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def _with_server(handler: Handler, body: Callable[[str, DirectClient], Awaitable[Any]]) -> Any:
    runner, url = await _serve(handler)
    client = DirectClient(10)
    try:
        return await body(url, client)
    finally:
        await client.aclose()
        await runner.cleanup()


def test_the_default_client_is_the_direct_one_and_httpx_stays_selectable() -> None:
    async def main() -> tuple[type, type]:
        direct, plain = http_client(4), http_client(4, "httpx")
        await direct.aclose()
        await plain.aclose()
        return type(direct), type(plain)

    direct, plain = asyncio.run(main())
    assert direct is DirectClient and plain is not DirectClient and issubclass(plain, httpx.AsyncClient)


def test_a_request_carries_method_params_headers_and_json_and_the_answer_is_an_httpx_response() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(method=request.method, path=request.path, query=dict(request.query),
                    auth=request.headers.get("Authorization"), type=request.headers.get("Content-Type"),
                    agent=request.headers.get("User-Agent"), body=await request.json())  # fmt: skip
        return web.json_response({"ok": "é"}, status=201, headers={"x-ratelimit-remaining-requests": "7"})

    async def body(url: str, client: DirectClient) -> httpx.Response:
        headers = {"Authorization": "Bearer k"}
        target = httpx.URL(url + "/v1/x")
        params, data = {"q": "a b&c"}, {"input": "hi"}
        return await client.request("POST", target, params=params, headers=headers, json=data, timeout=5)

    response = asyncio.run(_with_server(handler, body))
    assert isinstance(response, httpx.Response)
    assert response.status_code == 201 and response.is_success
    assert json.loads(response.content) == {"ok": "é"}
    assert response.headers["X-RateLimit-Remaining-Requests"] == "7"
    assert seen == {"method": "POST", "path": "/v1/x", "query": {"q": "a b&c"}, "auth": "Bearer k",
                    "type": "application/json", "agent": USER_AGENT, "body": {"input": "hi"}}  # fmt: skip
    assert USER_AGENT.startswith("taskq/")


def test_redirects_are_not_followed() -> None:
    async def handler(request: web.Request) -> web.Response:
        if request.path == "/moved":
            raise web.HTTPFound("/target")
        return web.Response(text="followed")

    async def body(url: str, client: DirectClient) -> httpx.Response:
        return await client.request("GET", url + "/moved", timeout=5)

    response = asyncio.run(_with_server(handler, body))
    assert response.status_code == 302 and response.headers["Location"] == "/target"


def test_a_slow_upstream_is_a_provider_timeout() -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def body(url: str, client: DirectClient) -> ProviderError:
        config = ProviderConfig(url, "k", "m", 0.2)
        with pytest.raises(ProviderError) as caught:
            await send(client, "OpenAI", config, "GET", url + "/slow")
        return caught.value

    error = asyncio.run(_with_server(handler, body))
    assert error.code == Code.PROVIDER_TIMEOUT and error.retryable


def test_a_refused_connection_is_provider_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: the connection is refused

        async def main() -> ProviderError:
            client = DirectClient(4)
            try:
                config = ProviderConfig(f"http://127.0.0.1:{port}", "k", "m", 5)
                with pytest.raises(ProviderError) as caught:
                    await send(client, "OpenAI", config, "GET", f"http://127.0.0.1:{port}/x")
                return caught.value
            finally:
                await client.aclose()

        error = asyncio.run(main())
    assert error.code == Code.PROVIDER_UNAVAILABLE and error.retryable
    assert isinstance(error.__cause__, httpx.ConnectError)


def test_a_connection_dropped_mid_answer_is_provider_unavailable() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"{")
        assert request.transport is not None
        request.transport.close()
        return response

    async def body(url: str, client: DirectClient) -> ProviderError:
        config = ProviderConfig(url, "k", "m", 5)
        with pytest.raises(ProviderError) as caught:
            await send(client, "OpenAI", config, "GET", url + "/x")
        return caught.value

    error = asyncio.run(_with_server(handler, body))
    assert error.code == Code.PROVIDER_UNAVAILABLE and error.retryable


def test_an_adapter_gets_the_same_result_over_the_direct_client_as_over_httpx() -> None:
    answer = {
        "id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5-mini",
        "output": [{"type": "message", "id": "m", "status": "completed", "role": "assistant", "content": [
            {"type": "output_text", "text": "Redis is fast.", "annotations": [
                {"type": "url_citation", "url": "https://redis.io", "title": "Redis", "start_index": 0,
                 "end_index": 5}]}]}],
    }  # fmt: skip

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(answer)

    payload = ChatGPTPayload.model_validate({"prompt": "why redis", "country": "US"})

    async def body(url: str, client: DirectClient) -> tuple[dict[str, Any], dict[str, Any]]:
        config = ProviderConfig(url, "k", "gpt-5-mini", 5)
        plain = http_client(4, "httpx")
        try:
            return await ADAPTERS["CHATGPT"](payload, client, config), await ADAPTERS["CHATGPT"](
                payload, plain, config
            )
        finally:
            await plain.aclose()

    direct, via_httpx = asyncio.run(_with_server(handler, body))
    assert direct == via_httpx and direct["text"].startswith("Redis is fast.")
    assert direct["sources"][0]["url"] == "https://redis.io"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_answer_reaches_the_adapter_decoded_as_over_httpx(encoding: str) -> None:
    """Providers compress what the client offers to accept: the direct client offers what httpx
    decodes, and hands the adapter the decoded body, as the plain httpx client does."""
    answer = {
        "id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5-mini",
        "output": [{"type": "message", "id": "m", "status": "completed", "role": "assistant", "content": [
            {"type": "output_text", "text": "Compressed " * 200, "annotations": []}]}],
    }  # fmt: skip
    offered: list[str] = []
    agents: set[str | None] = set()

    async def handler(request: web.Request) -> web.Response:
        accepted = request.headers.get("Accept-Encoding", "")
        offered.append(accepted)
        agents.add(request.headers.get("User-Agent"))
        raw = json.dumps(answer).encode()
        if encoding not in [name.strip() for name in accepted.split(",")]:
            return web.Response(body=raw, content_type="application/json")
        packed = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
        headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
        return web.Response(body=packed, headers=headers)

    payload = ChatGPTPayload.model_validate({"prompt": "why redis", "country": "US"})

    async def body(url: str, client: DirectClient) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        config = ProviderConfig(url, "k", "gpt-5-mini", 5)
        plain = http_client(4, "httpx")
        try:
            raw = await client.request("POST", url + "/v1/responses", json={}, timeout=5)
            direct = await ADAPTERS["CHATGPT"](payload, client, config)
            return raw, direct, await ADAPTERS["CHATGPT"](payload, plain, config)
        finally:
            await plain.aclose()

    raw, direct, via_httpx = asyncio.run(_with_server(handler, body))
    assert raw.headers["Content-Encoding"] == encoding and raw.json() == answer
    assert direct == via_httpx and direct["text"].startswith("Compressed Compressed")
    assert offered[0] == offered[-1] == httpx.AsyncClient().headers["Accept-Encoding"]
    assert agents == {USER_AGENT}, "both transports say they are taskq"


def test_provider_calls_go_through_the_proxy_the_environment_names_except_to_no_proxy_hosts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As httpx does: HTTP_PROXY for http URLs (with the credentials it carries), NO_PROXY's hosts
    straight."""
    seen: list[tuple[str, str]] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(("proxy", str(request.url)))
        seen.append(("credentials", request.headers.get("Proxy-Authorization", "")))
        return web.json_response({"via": "proxy"})

    async def provider(request: web.Request) -> web.Response:
        seen.append(("provider", request.path))
        return web.json_response({"via": "provider"})

    async def main() -> list[Any]:
        proxy_runner, proxy_url = await _serve(proxy)
        provider_runner, provider_url = await _serve(provider)
        monkeypatch.setenv("HTTP_PROXY", proxy_url.replace("http://", "http://egress:s3cret@"))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.delenv("http_proxy", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = DirectClient(4)
        try:
            named = await client.request("GET", "http://provider.invalid/v1/x?q=1", timeout=5)
            direct = await client.request("GET", provider_url + "/v1/y", timeout=5)
            return [named.json(), direct.json()]
        finally:
            await client.aclose()
            await proxy_runner.cleanup()
            await provider_runner.cleanup()

    assert asyncio.run(main()) == [{"via": "proxy"}, {"via": "provider"}]
    credentials = "Basic " + base64.b64encode(b"egress:s3cret").decode()
    assert seen == [("proxy", "http://provider.invalid/v1/x?q=1"), ("credentials", credentials),
                    ("provider", "/v1/y")]  # fmt: skip
