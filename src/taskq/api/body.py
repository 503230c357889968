"""Reading request bodies with a size limit and a deadline, so slow clients cannot hold intake threads."""

from __future__ import annotations

import time

from flask import request
from werkzeug.exceptions import ClientDisconnected

from taskq.errors import PayloadTooLarge, RequestTimeout

CHUNK = 64 * 1024


def read_body(max_bytes: int, timeout: float) -> bytes:
    """The whole body within `timeout` seconds: 413 past max_bytes, 408 when the client is too slow.

    Under gunicorn the connection's socket gets the remaining time as its timeout before each read;
    a client that trickles its body gets 408 and the connection is closed.
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge("Request body too large", {"max": max_bytes})
    sock = request.environ.get("gunicorn.socket")
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if sock is not None:
                sock.settimeout(remaining)
            chunk = request.stream.read(CHUNK)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > max_bytes:
                raise PayloadTooLarge("Request body too large", {"max": max_bytes})
            chunks.append(chunk)
    except (TimeoutError, ClientDisconnected) as exc:
        # werkzeug reports the socket timeout as a disconnect; the clock tells which one it was
        if isinstance(exc, ClientDisconnected) and time.monotonic() < deadline - 0.05:
            raise
        request.environ["taskq.close_connection"] = True
        raise RequestTimeout(f"Request body not received within {timeout:g} s") from None
    finally:
        if sock is not None:
            sock.settimeout(None)
