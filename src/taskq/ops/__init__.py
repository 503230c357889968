"""Operator tools: the one-command local stack, bulk submission and the end-to-end demo."""

from __future__ import annotations


class OpsError(Exception):
    """A problem the operator can fix (no stack, port busy, bad file): printed without a traceback."""
