"""Reading request bodies with a size limit (under `taskq serve` the body is already in memory: the
ASGI layer read it within its deadline before handing the request over, taskq.api.asgi)."""

from __future__ import annotations

from flask import request

from taskq.errors import PayloadTooLarge


def read_body(max_bytes: int) -> bytes:
    """The whole body: 413 past max_bytes."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge("Request body too large", {"max": max_bytes})
    body = request.stream.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise PayloadTooLarge("Request body too large", {"max": max_bytes})
    return body
