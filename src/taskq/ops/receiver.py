"""A local webhook receiver for the demo that verifies every Standard Webhooks signature it gets."""

from __future__ import annotations

import binascii
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from taskq.webhooks import signing

TOLERANCE_SECONDS = 300  # Standard Webhooks: reject timestamps more than 5 minutes off


def verify(secrets: list[str], headers: dict[str, str], body: bytes, now: float | None = None) -> str | None:
    """None when one of the signatures matches one of the secrets, else why the delivery is refused."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "").split()
    if not msg_id or not (stamp.isascii() and stamp.isdigit()) or not signatures:
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE_SECONDS:
        return f"timestamp {stamp} is more than {TOLERANCE_SECONDS} s away from now"
    try:
        expected = [signing.sign(secret, msg_id, int(stamp), body) for secret in secrets]
    except (ValueError, binascii.Error) as exc:
        return f"cannot compute the signature: {exc}"
    for candidate in signatures:
        if any(hmac.compare_digest(candidate.encode(), e.encode()) for e in expected):
            return None
    return "no signature matches the organization's secrets"


@dataclass(frozen=True, slots=True)
class Delivery:
    msg_id: str
    verified: bool
    reason: str | None
    event: dict[str, Any] | None

    @property
    def task_id(self) -> str | None:
        task = (self.event or {}).get("task")
        return task.get("id") if isinstance(task, dict) else None


class Receiver:
    """An HTTP server on 127.0.0.1 (free port) in a daemon thread; records deliveries by webhook-id."""

    def __init__(self, secrets: list[str], host: str = "127.0.0.1") -> None:
        self.secrets = secrets
        self.deliveries: dict[str, Delivery] = {}
        self.attempts = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}/webhooks/taskq"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def record(self, headers: dict[str, str], body: bytes) -> bool:
        reason = verify(self.secrets, headers, body)
        try:
            event = json.loads(body) if reason is None else None
        except ValueError:
            event, reason = None, "body is not JSON"
        delivery = Delivery(headers.get("webhook-id", ""), reason is None, reason, event)
        with self.lock:
            self.attempts += 1
            previous = self.deliveries.get(delivery.msg_id)
            if previous is None or not previous.verified:  # a retry carries the same id: keep one
                self.deliveries[delivery.msg_id] = delivery
        return reason is None

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries.values())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = receiver.record(headers, body)
                # 2xx acknowledges; a refused signature answers 400 as a real receiver should.
                self.send_response(204 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
