"""A throwaway Redis Cluster on loopback (N masters, no replicas) for the cluster test and benchmark."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import redis
from redis.crc import key_slot

from taskq.keys import Shard
from tests.support.waits import wait_for

NOT_YET = (redis.RedisError,)  # a node that does not answer yet


def free_ports(n: int) -> list[int]:
    """n distinct free ports, and their cluster-bus ports (port + 10000) free as well."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def binaries() -> tuple[str, str]:
    """redis-server and redis-cli; their absence is an error, never a skip (CI installs both)."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        raise RuntimeError(
            "the cluster test needs redis-server and redis-cli on PATH (apt install redis-server)"
        )
    return server, cli


def place_shards(url: str, shards: int) -> None:
    """Move the slot of shard i to master i % masters (empty slots only), so every master gets a shard.

    redis-cli splits the slots in even ranges, and the tags land where their hash falls: shards 0 and
    1 share the third master, shard 2 the first, and the second master gets none.
    """
    first = redis.Redis.from_url(url.replace("+cluster", ""), decode_responses=True)
    ranges = sorted(first.cluster("slots"))  # [[start, end, [host, port, id, ...]], ...]
    masters = sorted({(int(node[1]), str(node[2])) for _, _, node, *_ in ranges})
    nodes = {port: redis.Redis(port=port, decode_responses=True) for port, _ in masters}
    for index in range(shards):
        slot = key_slot(Shard(index).tag.encode())
        owner = next((port, node) for start, end, (_, port, node, *_), *_ in ranges if start <= slot <= end)
        target = masters[index % len(masters)]
        if owner[0] == target[0]:
            continue
        # The steps of redis-cli --cluster reshard, for a slot with no keys to migrate.
        nodes[target[0]].cluster("setslot", slot, "importing", owner[1])
        nodes[owner[0]].cluster("setslot", slot, "migrating", target[1])
        for port in [target[0], owner[0], *(p for p in nodes if p not in (target[0], owner[0]))]:
            nodes[port].cluster("setslot", slot, "node", target[1])
        for node in nodes.values():
            wait_for(partial(_owns, node, slot, target[0]), 10, f"slot {slot} to move", errors=NOT_YET)


def _owner(node: redis.Redis, slot: int) -> int:
    return next(int(n[1]) for start, end, n, *_ in node.cluster("slots") if start <= slot <= end)


def _owns(node: redis.Redis, slot: int, port: int) -> bool:
    return _owner(node, slot) == port


def _pings(port: int) -> bool:
    return bool(redis.Redis(port=port).ping())


def _cluster_ok(port: int) -> bool:
    return bool(redis.Redis(port=port).cluster("info")["cluster_state"] == "ok")


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[str]:
    """Start a cluster of `masters` redis-servers; yield its redis+cluster:// URL; remove it afterwards."""
    server, cli = binaries()
    workdir = tempfile.mkdtemp(prefix="taskq-cluster-")
    ports = free_ports(masters)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = f"{workdir}/{port}"
            os.makedirs(node_dir)
            options = {"port": str(port), "bind": "127.0.0.1", "cluster-enabled": "yes", "dir": node_dir,
                       "cluster-config-file": "nodes.conf", "cluster-node-timeout": "2000", "save": "",
                       "appendonly": "no"}  # fmt: skip
            args = [x for name, value in options.items() for x in (f"--{name}", value)]
            procs.append(
                subprocess.Popen([server, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port in ports:
            wait_for(partial(_pings, port), 10, f"redis-server on port {port}", errors=NOT_YET)
        addresses = [f"127.0.0.1:{p}" for p in ports]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=30,
        )
        for port in ports:
            wait_for(partial(_cluster_ok, port), 20, f"cluster_state:ok on port {port}", errors=NOT_YET)
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
