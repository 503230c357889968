"""The Procfile runs under honcho: web answers, the worker registers with RQ, Ctrl-C stops both."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support.env import REAL_REDIS_URL
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.redis
@pytest.mark.slow
def test_procfile_starts_web_and_worker_under_honcho(real_redis: Any, tmp_path: Path) -> None:
    honcho = shutil.which("honcho", path=str(Path(sys.executable).parent)) or shutil.which("honcho")
    assert honcho, "honcho is a dev dependency"
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "TASKQ_REDIS_URL": REAL_REDIS_URL, "PORT": str(port)}  # fmt: skip
    argv = [honcho, "-f", str(ROOT / "Procfile"), "start"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        healthy = registered = False
        while time.monotonic() < deadline and not (healthy and registered):
            time.sleep(0.3)
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                healthy = False
            client = redis.Redis.from_url(REAL_REDIS_URL)
            registered = bool(client.smembers("rq:workers")) and bool(client.hlen("tq:workers"))
        assert healthy and registered, "web or worker (with a running drain) did not come up under honcho"
        # A stop in the first moments of a drain can miss it (known: the drain then stops within
        # lease/3, when it sees its RQ worker gone); this test is about the Procfile, so let it settle.
        time.sleep(2)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    log = "\n".join(line for line in output.decode().splitlines() if "sending SIGKILL" not in line)
    assert "web.1 stopped" in log and "worker.1 stopped" in log, log[-2000:]
    deadline = time.monotonic() + 10  # the pool deregisters its workers as they exit
    while redis.Redis.from_url(REAL_REDIS_URL).smembers("rq:workers") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not redis.Redis.from_url(REAL_REDIS_URL).smembers("rq:workers"), log[-3000:]
