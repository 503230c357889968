"""Plain stderr progress lines: redrawn in place on a terminal, an occasional line when piped."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def bar(done: int, total: int, width: int = 28) -> str:
    filled = width if total <= 0 else min(width, done * width // total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


class Progress:
    """One status line; `update` is cheap to call often (it throttles itself)."""

    def __init__(self, stream: TextIO | None = None, *, tty_interval: float = 0.1, log_interval: float = 5.0):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval = tty_interval if self.tty else log_interval
        self._last = 0.0
        self._width = 0

    def update(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            # Pad over the previous line's tail; \r keeps the cursor on the same row.
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self, text: str) -> None:
        """Draw the final state and end the line."""
        self.update(text, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self._width = 0
