"""The operator console in tests: its admin token and a signed-in session."""

from __future__ import annotations

import re
from typing import Any

TOKEN = "admin-secret"


def task(prompt: str = "x", **extra: Any) -> dict[str, Any]:
    """One GEMINI task of a batch body."""
    return {"taskType": "GEMINI", "payload": {"prompt": prompt, "country": "US"}, **extra}


def signed_in(client: Any) -> str:
    """Sign in through the link `taskq up` prints; return the session's CSRF token from a page."""
    response = client.get(f"/dashboard?token={TOKEN}")
    assert response.status_code == 303 and response.headers["Location"] == "/dashboard"
    page = client.get("/dashboard").data.decode()
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)
