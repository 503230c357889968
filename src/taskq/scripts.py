"""Lua scripts: loaded from taskq/lua/, prefixed with the key-name preamble, registered once per client;
and ``Op``, one script call with the reading of its reply.

A script may say ``--#include <name>`` on a line of its own to splice in ``lua/<name>.lua`` (a library of
shared local functions, named ``*_lib.lua``; libraries are not scripts of their own).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Generic, TypeVar

from taskq.keys import lua_preamble
from taskq.redistypes import Script, ScriptHost

INCLUDE = re.compile(r"^--#include (\w+)$", re.MULTILINE)

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Op(Generic[R]):
    """One scheduler transition: a script call and the reading of its reply.

    ``shared`` > 0 marks a script that takes many items in one call: ops of that script with the same
    keys and the same first ``shared`` arguments may be sent as one call with their remaining
    arguments concatenated; the reply then is a list with one entry per op, each read as ``[entry]``.
    """

    script: str
    keys: list[str]
    args: list[Any]
    parse: Callable[[Any], R]
    shared: int = 0


def merge_shared(ops: Sequence[Op[Any]]) -> tuple[list[Op[Any]], list[list[int]]]:
    """The script calls that carry these ops: ops that can share a call (see ``Op.shared``) merged
    into one, the others as they are; with, for each call, the indexes of the ops it carries."""
    calls: list[Op[Any]] = []
    members: list[list[int]] = []
    merged_args: dict[int, list[Any]] = {}  # call position -> the arguments of its merged call
    open_calls: dict[tuple[Any, ...], int] = {}
    for index, op in enumerate(ops):
        group = (op.script, *op.keys, *op.args[: op.shared]) if op.shared else None
        at = open_calls.get(group) if group is not None else None
        if at is None:
            if group is not None:
                open_calls[group] = len(calls)
            calls.append(op)
            members.append([index])
        else:
            merged_args.setdefault(at, list(calls[at].args)).extend(op.args[op.shared :])
            members[at].append(index)
    for at, args in merged_args.items():
        first = calls[at]
        calls[at] = Op(first.script, first.keys, args, first.parse, first.shared)
    return calls, members


def _read(name: str) -> str:
    return resources.files("taskq").joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _expand(name: str, seen: set[str]) -> str:
    """A file with its includes spliced in, recursively; each library once per script."""

    def splice(match: re.Match[str]) -> str:
        lib = match.group(1)
        if lib in seen:
            return ""
        seen.add(lib)
        return _expand(lib, seen)

    return INCLUDE.sub(splice, _read(name))


@cache
def _helpers() -> ThreadPoolExecutor:
    """Threads that wait for script replies (Scripts.start): one per call under way, started as needed,
    more than an intake has request threads (TASKQ_INTAKE_THREADS)."""
    return ThreadPoolExecutor(max_workers=1024, thread_name_prefix="taskq-script")


os.register_at_fork(after_in_child=_helpers.cache_clear)  # a forked child has none of its parent's threads


@cache
def source(name: str) -> str:
    """The full text of one script: the generated key builders, then the script with its includes."""
    body = _expand(name, set())
    return lua_preamble(body) + body


class Scripts:
    """The registered scripts of one Redis client; redis-py reloads them after a NOSCRIPT."""

    def __init__(self, client: ScriptHost) -> None:
        self._client = client
        self._scripts: dict[str, Script] = {}

    def __getitem__(self, name: str) -> Script:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client.register_script(source(name))
        return script

    def start(self, name: str, keys: list[Any], args: list[Any]) -> Callable[[], Any]:
        """Send one script call and return a function that waits for its reply.

        What the caller does in between overlaps with the script running in Redis (another core):
        the intake builds a batch's answers while its admission runs. The call is the script's usual
        one (EVALSHA, loading the script after a NOSCRIPT), made from a helper thread that waits for
        the reply; the function returns it or raises what the call raised.
        """
        return _helpers().submit(self[name], keys=keys, args=args).result

    def load_all(self) -> list[str]:
        """Load every script into the server (readiness check); return their names."""
        names = sorted(
            p.name[:-4] for p in resources.files("taskq").joinpath("lua").iterdir() if p.name.endswith(".lua")
        )
        for name in names:
            self._client.script_load(source(name))
        return names
