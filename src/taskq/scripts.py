"""Lua scripts: loaded from taskq/lua/, prefixed with the key-name preamble, registered once per client.

A script may say ``--#include <name>`` on a line of its own to splice in ``lua/<name>.lua`` (a library of
shared local functions, named ``*_lib.lua``; libraries are not scripts of their own).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from redis.commands.core import Script

from taskq.keys import lua_preamble

INCLUDE = re.compile(r"^--#include (\w+)$", re.MULTILINE)


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
def source(name: str) -> str:
    """The full text of one script: the generated key builders, then the script with its includes."""
    return lua_preamble() + _expand(name, set())


class Scripts:
    """The registered scripts of one Redis client; redis-py reloads them after a NOSCRIPT."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._scripts: dict[str, Script] = {}

    def __getitem__(self, name: str) -> Script:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client.register_script(source(name))
        return script

    def load_all(self) -> list[str]:
        """Load every script into the server (readiness check); return their names."""
        names = sorted(
            p.name[:-4] for p in resources.files("taskq").joinpath("lua").iterdir() if p.name.endswith(".lua")
        )
        for name in names:
            self._client.script_load(source(name))
        return names
