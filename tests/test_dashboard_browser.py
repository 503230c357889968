"""The dashboard in headless Chromium: the numbers it renders match Redis, and it screenshots cleanly."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from taskq.api import create_app
from taskq.store import Store
from tests.conftest import IN_CI, auth, make_settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,1400",
]


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if IN_CI:
            raise RuntimeError("CI needs Debian's chromium for the dashboard test (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install chromium); mandatory in CI")
    return CHROMIUM


@pytest.fixture
def served(real_redis: Any) -> Iterator[tuple[str, Any]]:
    app = create_app(make_settings(admin_token="dash-token"), client=real_redis)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()


def render(chromium: str, url: str, tmp: Path, *extra: str) -> str:
    result = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=8000", *extra, url],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    return result.stdout


@pytest.mark.redis
@pytest.mark.slow
def test_dashboard_numbers_match_redis(
    chromium: str, served: tuple[str, Any], real_redis: Any, tmp_path: Path
) -> None:
    base, app = served
    store = Store(real_redis)
    http = app.test_client()
    for n, priorities in enumerate([(9, 9, 3), (1, 1, 1, 1)]):
        _, key = store.create_org(f"tenant-{n}", credits=1000, concurrency=5, queue_limit=100)
        batch = [
            {"taskType": "GEMINI", "payload": {"prompt": "p", "country": "US"}, "priority": p}
            for p in priorities
        ]
        assert http.post("/v1/async/task/batch", json=batch, headers=auth(key)).status_code == 200
    url = f"{base}/dashboard?token=dash-token"
    dom = render(chromium, url, tmp_path, "--dump-dom")
    assert 'data-loaded="1"' in dom, dom[:2000]

    def shown(element_id: str) -> str:
        match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
        assert match, element_id
        return match.group(1)

    queued = sum(
        int(real_redis.hget(k, "queued") or 0)
        for k in real_redis.scan_iter(match="tq:*:org:org_*")
        if real_redis.type(k) == "hash"
    )
    assert int(shown("kpi-queued")) == queued == 7
    assert int(shown("kpi-processing")) == 0
    assert "tenant-0" in dom and "tenant-1" in dom
    rows = dict(re.findall(r'<tr><td class="n">(\d+)</td><td class="n">(\d+)</td></tr>', dom))
    assert rows == {"9": "2", "3": "1", "1": "4"}

    shot = tmp_path / "dashboard.png"
    render(chromium, url, tmp_path, f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@pytest.mark.redis
@pytest.mark.slow
def test_dashboard_lists_schedules_with_next_run_and_last_outcome(
    chromium: str, served: tuple[str, Any], real_redis: Any, tmp_path: Path
) -> None:
    from taskq import schedules

    base, _ = served
    store = Store(real_redis)
    org, _ = store.create_org("tenant-s", credits=1000, concurrency=5, queue_limit=100)
    task = {"taskType": "GEMINI", "payload": {"prompt": "p", "country": "US"}}
    settings = make_settings()
    made = schedules.create(store, settings, store.org(org), {"name": "nightly-check", "cron": "30 2 * * *",
                            "timezone": "Europe/Berlin", "tasks": [task]})  # fmt: skip
    schedules.create(store, settings, store.org(org), {"name": "paused-one", "everySeconds": 60,
                     "tasks": [task], "paused": True})  # fmt: skip
    dom = render(chromium, f"{base}/dashboard?token=dash-token", tmp_path, "--dump-dom")
    assert 'data-loaded="1"' in dom, dom[:2000]
    table = dom[dom.index('id="schedules"') :]
    assert "nightly-check" in table and "30 2 * * * Europe/Berlin" in table
    assert made["nextRunAt"][:19].replace("T", " ") in table
    assert "paused-one" in table and "paused" in table and "never" in table
