"""`taskq up`: the whole local stack in one command: Redis, intake, workers, and optionally a simulator."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from taskq.connection import connect, resolve_url
from taskq.embedded import EmbeddedServer, answers
from taskq.ops import OpsError
from taskq.ops.admin import admin_token, dashboard_link
from taskq.ops.processes import Child, free_port, interrupts_blocked, port_in_use, spawn, stop
from taskq.ops.stack import remove_stack, write_stack
from taskq.ops.stackorg import StackOrg, ensure_stack_org
from taskq.schemas.tasks import TaskType
from taskq.settings import Settings, key_setting
from taskq.store import Store

STOP_ORDER = ("worker", "intake", "simulator")  # workers release their tasks while Redis still runs
LOCAL_NETWORKS = '["127.0.0.0/8"]'  # lets webhooks reach receivers on this machine (demo, your app)

CURL = """curl -s {url}/v1/async/task/batch \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '[{task}]'"""
EXAMPLES = {  # the curl example uses a task type the stack can run
    "CHATGPT": '{"taskType":"CHATGPT","payload":{"prompt":"Best CRM for startups","country":"US"}}',
    "GOOGLE_NEWS": '{"taskType":"GOOGLE_NEWS","payload":{"query":"electric vehicle sales","country":"US"}}',
}


def curl_example(info: dict[str, Any], types: list[str]) -> str:
    task = EXAMPLES["CHATGPT" if "CHATGPT" in types else "GOOGLE_NEWS"]
    return CURL.format(url=info["url"], key=info["apiKey"], task=task)


def task_types(info: dict[str, Any], settings: Settings) -> list[str]:
    """Task types the stack can run: all when simulated, else those with a configured provider key."""
    return [t.value for t in TaskType if info["simulatorUrl"] or settings.provider_key(t) is not None]


class Stack:
    """The processes of one `taskq up`, started in dependency order and stopped in reverse."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.settings = settings
        self.data_dir = Path(settings.data_dir).resolve()
        self.children: dict[str, Child] = {}
        self.embedded: EmbeddedServer | None = None
        self.stop_requested = threading.Event()
        self.force = threading.Event()
        self.admin_token = ""

    # Signals -------------------------------------------------------------------------------------
    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_requested.is_set():
            self.force.set()
            print("\ntaskq up: stopping now (killing what is left)", file=sys.stderr, flush=True)
            return
        self.stop_requested.set()
        print(f"\ntaskq up: {signal.Signals(signum).name}: stopping (again to force)", file=sys.stderr)

    def _check(self) -> None:
        if self.stop_requested.is_set():
            raise OpsError("interrupted while starting")
        for child in self.children.values():
            if not child.alive:
                raise OpsError(
                    f"`taskq {child.name}` exited with code {child.proc.returncode}; "
                    f"last lines of {child.log}:\n{child.tail()}"
                )

    # Start ---------------------------------------------------------------------------------------
    def redis(self) -> str:
        with interrupts_blocked():
            if self.args.embedded_redis and not self.settings.redis_url:
                server = EmbeddedServer(self.settings.embedded_redis_port, str(self.data_dir / "redis"))
                if answers(server.url):
                    return server.url
                self.embedded = server.start()
                return server.url
            if self.args.embedded_redis:
                print("taskq up: TASKQ_REDIS_URL is set, so --embedded-redis is ignored", file=sys.stderr)
            url, self.embedded = resolve_url(self.settings)
            return url

    def env(self, redis_url: str, sim_url: str | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(TASKQ_REDIS_URL=redis_url, TASKQ_DATA_DIR=str(self.data_dir), PYTHONUNBUFFERED="1")
        env.setdefault("TASKQ_WEBHOOK_ALLOW_NETWORKS", LOCAL_NETWORKS)
        env["TASKQ_ADMIN_TOKEN"] = self.admin_token
        if sim_url is not None:
            env["TASKQ_UPSTREAM_BASE_URL"] = sim_url
            for task_type in TaskType:
                env_var = key_setting(task_type)
                if env_var:
                    env[env_var] = "simulated"
                    env.pop(f"{env_var}S", None)  # a pool of real keys would be sent to the simulator
        return env

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check()
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise OpsError(f"{url} did not answer within {timeout:.0f} s; logs in {self.data_dir / 'logs'}")

    def start(self) -> dict[str, Any]:
        args = self.args
        if port_in_use(args.port):
            raise OpsError(f"port {args.port} is in use (another `taskq up`?); pass --port")
        redis_url = self.redis()
        org = self.bootstrap(redis_url)
        self.admin_token = admin_token(self.settings)
        logs = self.data_dir / "logs"
        sim_url = None
        if args.simulate:
            sim_port = free_port()
            sim_url = f"http://127.0.0.1:{sim_port}"
            sim_argv = ["simulator", "--port", str(sim_port), "--latency", str(args.sim_latency)]
            sim_argv += ["--error-rate", str(args.sim_error_rate)]
            self.children["simulator"] = spawn("simulator", sim_argv, self.env(redis_url, sim_url), logs)
            self.wait_http(f"{sim_url}/healthz")
        env = self.env(redis_url, sim_url)
        serve = ["serve", "--host", "127.0.0.1", "--port", str(args.port)]
        self.children["intake"] = spawn("intake", serve, env, logs)
        worker = ["worker", "--processes", str(self.processes), "--concurrency", str(self.concurrency)]
        self.children["worker"] = spawn("worker", worker, env, logs)
        url = f"http://127.0.0.1:{args.port}"
        self.wait_http(f"{url}/readyz")
        time.sleep(1.0)  # a worker that cannot start (bad flag, no Redis) exits within a second
        self._check()
        return {
            "url": url,
            "orgId": org.org_id,
            "apiKey": org.api_key,
            "adminToken": self.admin_token,
            "dashboardUrl": dashboard_link(url, self.admin_token),
            "webhookSecrets": org.webhook_secrets,
            "redisUrl": redis_url,
            "redis": self.redis_kind(redis_url),
            "simulatorUrl": sim_url,
            "workers": {"processes": self.processes, "concurrency": self.concurrency},
            "pid": os.getpid(),
            "processes": {name: child.proc.pid for name, child in self.children.items()},
            "logs": str(logs),
        }

    def redis_kind(self, url: str) -> str:
        """How the stack came to this Redis, for the banner."""
        if self.settings.redis_url:
            return "TASKQ_REDIS_URL"
        if url == self.settings.local_redis_url:
            return "local, held nothing or only taskq's data"
        return "embedded"

    @property
    def processes(self) -> int:
        return int(self.args.workers or self.settings.worker_processes)

    @property
    def concurrency(self) -> int:
        return int(self.args.concurrency or self.settings.worker_concurrency)

    def bootstrap(self, redis_url: str) -> StackOrg:
        client = connect(redis_url, cluster=self.settings.redis_cluster)
        try:
            return ensure_stack_org(
                Store(client, self.settings.shards),
                concurrency=max(self.settings.default_concurrency, self.processes * self.concurrency),
                queue_limit=self.settings.default_queue_limit,
            )
        finally:
            client.close()

    # Run and stop --------------------------------------------------------------------------------
    def watch(self) -> int:
        while not self.stop_requested.wait(0.5):
            for child in self.children.values():
                if not child.alive:
                    print(
                        f"taskq up: `taskq {child.name}` exited unexpectedly "
                        f"(code {child.proc.returncode}); stopping the stack. Last lines of {child.log}:\n"
                        f"{child.tail()}",
                        file=sys.stderr,
                    )
                    return 1
        return 0

    def shutdown(self) -> bool:
        """Stop in order; True when every child exited on its own (no SIGKILL needed)."""
        graces = {"worker": self.settings.shutdown_grace_seconds + 10, "intake": 15.0, "simulator": 5.0}
        clean = True
        for name in STOP_ORDER:
            child = self.children.get(name)
            if child is None:
                continue
            print(f"taskq up: stopping {name} (pid {child.proc.pid})", file=sys.stderr, flush=True)
            code = stop(child, graces[name], self.force)
            if code not in (0, -signal.SIGTERM):
                clean = False
                how = "was killed" if code == -signal.SIGKILL else f"exited with code {code}"
                print(f"taskq up: {name} {how} (grace {graces[name]:g} s)", file=sys.stderr, flush=True)
        if self.embedded is not None:
            print("taskq up: stopping the embedded Redis (data kept in its AOF)", file=sys.stderr)
            self.embedded.stop()
        return clean


def banner(info: dict[str, Any], configured: list[str], data_dir: Path) -> str:
    simulated = f"  (providers simulated at {info['simulatorUrl']})" if info["simulatorUrl"] else ""
    workers = info["workers"]
    lines = [
        f"taskq is up{simulated}",
        f"  URL             {info['url']}",
        f"  Dashboard       {info['dashboardUrl']}",
        f"  Organization    {info['orgId']}",
        f"  API key         {info['apiKey']}",
        f"  Webhook secret  {info['webhookSecrets'][0]}",
        f"  Redis           {info['redisUrl']} ({info['redis']})",
        f"  Workers         {workers['processes']} process(es) x {workers['concurrency']} calls in flight",
        f"  Task types      {', '.join(configured) or 'none: set provider keys or use --simulate'}",
        f"  Logs            {info['logs']}",
        f"  Stack file      {data_dir / 'stack.json'} (taskq submit / taskq demo read it)",
        "",
        "Try it:",
        "  " + info["curl"],
        "  taskq demo",
        "  taskq submit tasks.jsonl --wait",
        "",
        "Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    stack = Stack(args, settings)
    previous = {sig: signal.signal(sig, stack.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 1
    try:
        info = stack.start()
        types = task_types(info, settings)
        info |= {"taskTypes": types, "curl": curl_example(info, types)}
        path = write_stack(settings, info)
        print(banner(info, types, path.parent), flush=True)
        code = stack.watch()
    except OpsError:
        if not stack.stop_requested.is_set():
            raise
        code = 0  # Ctrl-C during start-up: stop what was started, quietly
    finally:
        clean = stack.shutdown()
        remove_stack(settings, os.getpid())
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("taskq up: stopped" + ("" if clean else " (some processes had to be killed)"), file=sys.stderr)
    return code
