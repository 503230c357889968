"""Logging setup for every entry point: text, or one JSON object per line (TASKQ_LOG_FORMAT=json).

Context travels in ``extra``: ``log.info("task failed", extra={"task_id": ..., "org": ..., "provider": ...,
"attempt": ...})``. Secrets never reach a record: keys, tokens and webhook secrets are not logged, and
the formatter masks anything that looks like one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("task_id", "org", "provider", "attempt", "batch_id", "delivery_id", "worker")
SECRET = re.compile(r"(sk_live_[0-9a-f]{6})[0-9a-f]{26}|whsec_[A-Za-z0-9+/=]{8,}|(api_key=)[^&\s]+")


def redact(text: str) -> str:
    """Mask API keys, webhook secrets and api_key query parameters."""
    return SECRET.sub(lambda m: (m.group(1) or m.group(2) or "whsec_") + "…", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{field}={getattr(record, field)}" for field in CONTEXT_FIELDS if getattr(record, field, None)
        )
        line = super().format(record)
        return redact(f"{line} [{context}]" if context else line)


def configure(log_format: str = "text", level: str = "INFO") -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_taskq", False):
            root.removeHandler(old)
    handler._taskq = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request at INFO: a worker would write a line per provider call and webhook.
    logging.getLogger("httpx").setLevel(logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)
