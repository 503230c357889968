"""A small synchronous client of taskq's HTTP API for the operator tools, retrying where that is safe."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from taskq.ops import OpsError

#: Answers that mean "nothing was done, try again later" even for a POST.
RETRY_STATUSES = frozenset({429, 503})
CONNECT_RETRIES = 2  # a stack that is not there should fail in seconds, not minutes


class ApiError(OpsError):
    """A non-2xx answer, with the API's error code and message."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class Unreachable(OpsError):
    """The intake could not be reached: nothing was sent."""


def _error(response: httpx.Response) -> ApiError:
    try:
        err = response.json()["error"]
        return ApiError(response.status_code, err["code"], err["message"], err.get("details"))
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "HTTP_ERROR", response.text[:200])


def _delay(response: httpx.Response | None, attempt: int) -> float:
    retry_after = response.headers.get("Retry-After", "") if response is not None else ""
    if retry_after.isascii() and retry_after.isdigit():
        return min(float(retry_after), 60.0)
    return float(min(2**attempt, 30))


class ApiClient:
    """Bearer-authenticated calls to one intake; GETs retry on any transient failure."""

    def __init__(
        self, url: str, api_key: str, *, retries: int = 8, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.retries = retries
        self.http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "taskq-ops/1"},
            timeout=httpx.Timeout(120.0, connect=10.0),
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response: httpx.Response | None = None
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.ConnectError as exc:
                # The request never reached the server, so even a POST is safe to repeat.
                if attempt >= min(self.retries, CONNECT_RETRIES):
                    raise Unreachable(f"cannot reach {self.http.base_url}: {exc}") from exc
            except httpx.TransportError as exc:
                if not idempotent or attempt == self.retries:
                    raise OpsError(f"{method} {path} failed: {exc!r}") from exc
            else:
                retry = response.status_code in RETRY_STATUSES or (idempotent and response.status_code >= 500)
                if response.is_success or not retry or attempt == self.retries:
                    if not response.is_success:
                        raise _error(response)
                    return response
            time.sleep(_delay(response, attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def submit_batch(self, tasks: list[Any]) -> dict[str, Any]:
        """POST /v1/async/task/batch; a 429 or 503 admitted nothing, so it is retried with backoff."""
        content = json.dumps(tasks, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        body: dict[str, Any] = self._send(
            "POST", "/v1/async/task/batch", idempotent=False, content=content, headers=headers
        ).json()
        return body

    def batch(self, batch_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self._send("GET", f"/v1/async/batch/{batch_id}", idempotent=True).json()
        return view

    def batch_results(self, batch_id: str, limit: int = 500) -> Iterator[dict[str, Any]]:
        """Every finished task of a batch in input order, page by page (X-Next-Cursor)."""
        cursor: str | None = ""
        while cursor is not None:
            params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
            path = f"/v1/async/batch/{batch_id}/results"
            response = self._send("GET", path, idempotent=True, params=params)
            for line in response.text.splitlines():
                if line.strip():
                    yield json.loads(line)
            cursor = response.headers.get("X-Next-Cursor")

    def monitor(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        """POST /v1/monitor/<path>: one synchronous call, answered when it finished (not retried)."""
        return self._send("POST", f"/v1/monitor/{path}", idempotent=False, json=payload)

    def task(self, task_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self._send("GET", f"/v1/async/task/{task_id}", idempotent=True).json()
        return view
