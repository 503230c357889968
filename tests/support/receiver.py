"""The webhook receiver of the tests: checks each Standard Webhooks signature with the organization's
secrets the way a customer would, records every request, and answers as its path says.

Paths (`<kind>/<arg>`): /ok and /hook answer 204; /flaky/<n> fails the first n attempts of each event
with 500, then 200; /busy/<s> answers an event's first attempt 429 with Retry-After s (120 without
s), then 200; /down 503 with Retry-After now (an HTTP date); /gone 410; /redirect 302 to /landed;
/host 200 when the Host header names hooks.example, else 400; /hang does not answer until the
receiver stops; any other path 500. With secrets, a request whose signature does not verify is
answered 401 whatever its path.

One receiver, three ways to host it: `async with receiver.serving()` on the test's event loop,
`with receiver:` on a thread of its own, or `ReceiverProcess` in a process of its own (a test process
busy submitting tasks cannot slow its answers down there).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import standardwebhooks
from aiohttp import web

from tests.support.redis_server import free_port
from tests.support.served import Served
from tests.support.waits import wait_for


@dataclass
class Hit:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.time() when it arrived
    verified: bool

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def event(self) -> dict[str, Any] | None:
        """The event a verified request carried."""
        return json.loads(self.body) if self.verified else None

    @property
    def task_id(self) -> str | None:
        return ((self.event or {}).get("task") or {}).get("id")

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "headers": self.headers, "body": self.body.decode(), "at": self.at,
                "verified": self.verified}  # fmt: skip

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Hit:
        return cls(raw["path"], raw["headers"], raw["body"].encode(), raw["at"], raw["verified"])


class Receiver:
    def __init__(
        self, secrets: Iterable[str] = (), *, close: bool = False, on_hit: Callable[[Hit], Any] | None = None
    ) -> None:
        self.secrets = list(secrets)
        self.close = close  # close each connection after the answer (no kept-alive connection outlives it)
        self.on_hit = on_hit
        self.hits: list[Hit] = []
        self.release = asyncio.Event()  # lets hanging handlers finish before the server stops
        self.base = ""
        self._served: Served | None = None

    @property
    def url(self) -> str:
        return self.base + "/hook"

    @property
    def paths(self) -> list[str]:
        return [hit.path for hit in self.hits]

    def by_id(self, path_prefix: str = "/") -> dict[str, list[Hit]]:
        out: dict[str, list[Hit]] = {}
        for hit in self.hits:
            if hit.path.startswith(path_prefix):
                out.setdefault(hit.webhook_id, []).append(hit)
        return out

    def event_ids_by_task(self) -> dict[str, set[str]]:
        """The webhook ids of the verified events each task got."""
        out: dict[str, set[str]] = defaultdict(set)
        for hit in self.hits:
            if hit.verified and hit.task_id:
                out[hit.task_id].add(hit.webhook_id)
        return dict(out)

    def _verified(self, body: bytes, headers: dict[str, str]) -> bool:
        for secret in self.secrets:
            try:
                standardwebhooks.Webhook(secret).verify(body, headers)
                return True
            except standardwebhooks.WebhookVerificationError:
                continue
        return False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        hit = Hit(request.path, headers, body, time.time(), self._verified(body, headers))
        self.hits.append(hit)
        if self.on_hit is not None:
            self.on_hit(hit)
        response = await self._answer(request, hit)
        if self.close:
            response.force_close()
        return response

    async def _answer(self, request: web.Request, hit: Hit) -> web.StreamResponse:
        if self.secrets and not hit.verified:
            return web.Response(status=401)
        seen = sum(1 for h in self.hits if h.webhook_id == hit.webhook_id)
        kind, _, arg = request.path.strip("/").partition("/")
        match kind:
            case "ok" | "hook":
                return web.Response(status=204)
            case "flaky":  # fails the first <arg> attempts of each event
                return web.Response(status=500 if seen <= int(arg) else 200)
            case "busy":  # asks for a pause once
                if seen == 1:
                    return web.Response(status=429, headers={"Retry-After": arg or "120"})
                return web.Response()
            case "down":
                later = format_datetime(datetime.now(UTC).replace(microsecond=0), usegmt=True)
                return web.Response(status=503, headers={"Retry-After": later})
            case "gone":
                return web.Response(status=410)
            case "redirect":
                raise web.HTTPFound("/landed")
            case "host":
                return web.Response(status=200 if request.host.startswith("hooks.example") else 400)
            case "hang":
                await self.release.wait()
                return web.Response()
        return web.Response(status=500)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Receiver]:
        """Serve on the running event loop for the life of the block."""
        runner = web.AppRunner(self.app(), shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        try:
            yield self
        finally:
            self.release.set()
            await runner.cleanup()

    def __enter__(self) -> Receiver:
        self._served = Served(self.app(), on_stop=self.release.set).__enter__()
        self.base = self._served.url
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._served is not None
        self._served.__exit__(*exc)


def receiving(secrets: Iterable[str] = ()) -> Any:
    """`async with receiving(secrets) as rx:` a Receiver served on the running event loop."""
    return Receiver(secrets).serving()


@dataclass
class ReceiverProcess:
    """The Receiver in a process of its own (tests/support/hook_receiver.py) on 127.0.0.1 that can be
    stopped (port closed) and started again on the same port; it closes each connection after its
    answer, so no kept-alive connection outlives stop(), and logs every request to a file that `hits`
    reads. In the test process, a receiver starved under load: a thread per connection (http.server)
    answered after the senders' 2 s and even 10 s timeouts.
    """

    secrets: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    go: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def prepare(self) -> ReceiverProcess:
        """Start the process without opening the port (start() opens it within milliseconds)."""
        if self.log is None:
            fd, name = tempfile.mkstemp(prefix="taskq-hooks-", suffix=".jsonl")
            os.close(fd)
            self.log = Path(name)
            atexit.register(self._remove_files)
        self.go = self.log.with_suffix(".go")
        self.go.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "tests.support.hook_receiver",
            str(self.port),
            str(self.log),
            str(self.go),
        ]
        root = Path(__file__).resolve().parents[2]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, cwd=root)
        atexit.register(self.stop)  # a test that fails before its stop() leaves no receiver behind
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(self.secrets).encode())
        self.process.stdin.close()
        return self

    def start(self) -> ReceiverProcess:
        if self.process is None:
            self.prepare()
        assert self.go is not None
        self.go.touch()
        wait_for(self._listening, 30, "the webhook receiver to listen")
        return self

    def _listening(self) -> bool:
        assert self.process is not None and self.process.poll() is None, "the webhook receiver exited"
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def _remove_files(self) -> None:
        for path in (self.log, self.go):
            if path is not None:
                path.unlink(missing_ok=True)

    @property
    def hits(self) -> list[Hit]:
        if self.log is None or not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        return [Hit.from_json(json.loads(line)) for line in lines if line.endswith("}")]

    def event_ids_by_task(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for hit in self.hits:
            if hit.verified and hit.task_id:
                out[hit.task_id].add(hit.webhook_id)
        return dict(out)
