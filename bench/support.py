"""Shared benchmark plumbing: a private Redis, free ports, subprocess services, and figure tables."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_redis(appendonly: bool = False) -> Iterator[str]:
    """A redis-server of our own on a free port (or TASKQ_BENCH_REDIS_URL when set)."""
    url = os.environ.get("TASKQ_BENCH_REDIS_URL")
    if url:
        redis.Redis.from_url(url).flushdb()
        yield url
        return
    from taskq.embedded import config_args, server_binary

    binary = shutil.which("redis-server") or server_binary()
    assert binary, "no redis-server available"
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="taskq-bench-")
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        workdir,
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "everysec",
        *config_args(),  # the settings the README recommends
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: redis.Redis.from_url(url).ping())
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def wait_for(check: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"service did not come up: {last}")


def spawn(args: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen(
        [sys.executable, *args], env=full_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def machine_cpu() -> float:
    """CPU seconds the machine's cores have been busy since boot, everyone's (Linux /proc/stat).

    Over a run's wall time: how many cores the whole machine used, to say beside a rate whether
    the run had a core to spare or shared the machine with other work."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = [int(x) for x in f.readline().split()[1:9]]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def steady_rate(finished: Sequence[float]) -> float:
    """Completions per second in a run's steady middle: the least-squares slope of the completion
    count over finish time (ms), between the 10th and 90th percentile finishes.

    Why a slope and not the count between those two finishes over their distance (``span_rate``):
    with n = 10 x K calls of one latency the first K finish together, so the 10th percentile finish is
    always the first of the second wave, at the thin front of a burst, while the 90th lands wherever
    the later, smeared waves put it. The span then starts where finishes are sparse and reads low (3-7 %
    below the slope in nine runs of one drain); a slope through every finish between them is not
    pinned to either end.
    """
    times = sorted(finished)
    lo, hi = len(times) // 10, len(times) * 9 // 10
    if hi - lo < 2 or times[hi - 1] == times[lo]:
        return 0.0
    return statistics.linear_regression(times[lo:hi], range(lo, hi)).slope * 1000


def span_rate(finished: Sequence[float]) -> float:
    """Completions per second between the 10th and 90th percentile finish times (ms): the figure
    earlier runs printed as steady; kept beside ``steady_rate`` so old and new runs compare."""
    times = sorted(finished)
    if len(times) < 10:
        return 0.0
    lo, hi = times[len(times) // 10], times[len(times) * 9 // 10]
    return len(times) * 0.8 / max(0.001, (hi - lo) / 1000)


def median_spread(values: Sequence[float]) -> str:
    """'median (min-max)' of several runs."""
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"


def machine() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from taskq.embedded import RECOMMENDED_CONFIG

    tuning = ", ".join(f"{name} {value}" for name, value in RECOMMENDED_CONFIG.items())
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}; Redis with {tuning}"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        title,
        " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)),
        "-+-".join("-" * w for w in widths),
    ]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
    return "\n".join(lines)
