"""The admin token of a local stack and the console link that signs in with it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from taskq.settings import Settings

TOKEN_FILE = "admin-token"


def admin_token(settings: Settings) -> str:
    """TASKQ_ADMIN_TOKEN when set; else the token kept in the data directory, made on first use, so
    the console link and its sessions survive a restart of the stack."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = Path(settings.data_dir) / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    token = "adm_" + secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def dashboard_link(url: str, token: str) -> str:
    """Opens the console signed in: the token is traded for a session cookie and leaves the address bar."""
    return f"{url}/dashboard?token={token}"
