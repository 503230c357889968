"""The client Protocols against the real client classes: every method a Protocol names exists on every
client class it is cast from (``taskq.connection.connect``, ``taskq.worker.clients.redis_client``,
``tests.support.clients``), so a cast cannot hide a missing command."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio
import redis.asyncio.client
import redis.asyncio.cluster
import redis.client
import redis.cluster
import redis.commands.core

from taskq import redistypes
from tests.support.clients import Client


def members(protocol: type) -> set[str]:
    """The names a Protocol declares, its own and those of the Protocols it extends."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls is object or not getattr(cls, "_is_protocol", False) or cls.__module__ == "typing":
            continue
        names |= {n for n in vars(cls) if not n.startswith("_") or n in ("__call__", "__enter__", "__exit__")}
        names |= set(getattr(cls, "__annotations__", {}))
    return names


def missing(protocol: type, implementation: Any) -> list[str]:
    return sorted(name for name in members(protocol) if not hasattr(implementation, name))


SYNC = redis.Redis(decode_responses=True)  # no connection until a command is sent
ASYNC = redis.asyncio.Redis(decode_responses=True)
FAKE = fakeredis.FakeRedis(decode_responses=True)

CASES = [
    (redistypes.Redis, SYNC),
    (redistypes.Redis, redis.cluster.RedisCluster),
    (redistypes.Redis, FAKE),
    (Client, SYNC),
    (Client, FAKE),
    (redistypes.ScriptHost, SYNC),
    (redistypes.ScriptHost, redis.cluster.RedisCluster),
    (redistypes.ScriptHost, ASYNC),
    (redistypes.ScriptHost, redis.asyncio.cluster.RedisCluster),
    (redistypes.Script, SYNC.register_script("return 1")),
    (redistypes.Script, ASYNC.register_script("return 1")),
    (redistypes.Pipeline, SYNC.pipeline(transaction=False)),
    (redistypes.Pipeline, redis.cluster.ClusterPipeline),
    (redistypes.Pipeline, FAKE.pipeline(transaction=False)),
    (redistypes.AsyncRedis, ASYNC),
    (redistypes.AsyncRedis, redis.asyncio.cluster.RedisCluster),
    (redistypes.AsyncPipeline, ASYNC.pipeline(transaction=False)),
    (redistypes.AsyncPipeline, redis.asyncio.cluster.ClusterPipeline),
    (redistypes.AsyncPubSub, ASYNC.pubsub()),
]


@pytest.mark.parametrize(
    ("protocol", "implementation"),
    CASES,
    ids=[f"{p.__name__}-{getattr(i, '__name__', type(i).__name__)}" for p, i in CASES],
)
def test_every_method_a_protocol_names_exists_on_the_clients_cast_to_it(
    protocol: type, implementation: Any
) -> None:
    assert members(protocol), "a Protocol without members checks nothing"
    assert missing(protocol, implementation) == []


def test_a_cluster_client_has_every_command_the_tests_inspect_with() -> None:
    """``inspected`` views a cluster client as a ``Client`` too: it has every command; only the
    connection pool of a single-node client is not there."""
    assert missing(Client, redis.cluster.RedisCluster) == ["connection_pool"]
