"""The tests' webhook Receiver as a process: `python -m tests.support.hook_receiver PORT OUT [GO]`.

It reads the organization's webhook secrets (JSON list) from stdin, serves the Receiver on
127.0.0.1:PORT closing each connection after its answer, and appends one JSON line per request to
OUT (see `Hit.to_json`). With GO (a path), it starts listening only once that file exists: a test can
start the process ahead of time (seconds on a loaded machine) and open the port at a moment of its
choosing.
"""

from __future__ import annotations

import json
import os
import sys
import time

from aiohttp import web

from tests.support.receiver import Hit, Receiver


def main(port: int, out_path: str, secrets: list[str], go: str | None) -> None:
    out = open(out_path, "a", buffering=1)  # noqa: SIM115 - a line per hit, flushed, for the life of the process

    def record(hit: Hit) -> None:
        out.write(json.dumps(hit.to_json()) + "\n")

    receiver = Receiver(secrets, close=True, on_hit=record)
    while go is not None and not os.path.exists(go):
        time.sleep(0.005)
    web.run_app(receiver.app(), host="127.0.0.1", port=port, backlog=1024, access_log=None, print=None,
                shutdown_timeout=0.1)  # fmt: skip


if __name__ == "__main__":
    main(
        int(sys.argv[1]),
        sys.argv[2],
        json.loads(sys.stdin.read()),
        sys.argv[3] if len(sys.argv) > 3 else None,
    )
