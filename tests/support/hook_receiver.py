"""A webhook receiver process for the proof tests: `python -m tests.support.hook_receiver PORT OUT [GO]`.

It reads the organization's webhook secrets (JSON list) from stdin, serves POST /hook on 127.0.0.1:PORT,
verifies each Standard Webhooks signature, answers 204 (400 when it does not verify) closing the
connection, and appends one JSON line per request to OUT: {at, webhookId, taskId, verified, event}.
A process of its own, so a test process busy submitting tasks cannot slow its answers down. With GO
(a path), it starts listening only once that file exists: a test can start the process ahead of time
(seconds on a loaded machine) and open the port at a moment of its choosing.
"""

from __future__ import annotations

import json
import os
import sys
import time

from aiohttp import web

from taskq.ops.receiver import verify


def main(port: int, out_path: str, secrets: list[str], go: str | None) -> None:
    out = open(out_path, "a", buffering=1)  # noqa: SIM115 - a line per hit, flushed, for the life of the process

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        reason = verify(secrets, headers, body)
        event = json.loads(body) if reason is None else None
        task = (event or {}).get("task") or {}
        hit = {"at": time.time(), "webhookId": headers.get("webhook-id", ""), "taskId": task.get("id"),
               "verified": reason is None, "event": event}  # fmt: skip
        out.write(json.dumps(hit) + "\n")
        response = web.Response(status=204 if reason is None else 400)
        response.force_close()
        return response

    app = web.Application()
    app.router.add_post("/hook", handle)
    while go is not None and not os.path.exists(go):
        time.sleep(0.005)
    web.run_app(app, host="127.0.0.1", port=port, backlog=1024, access_log=None, print=None,
                shutdown_timeout=0.1)  # fmt: skip


if __name__ == "__main__":
    main(
        int(sys.argv[1]),
        sys.argv[2],
        json.loads(sys.stdin.read()),
        sys.argv[3] if len(sys.argv) > 3 else None,
    )
