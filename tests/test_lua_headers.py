"""Every Lua script's header declares what it touches: its KEYS, the ARGV it reads, and each key family it
builds itself (the ``k_*`` helpers generated from taskq.keys), read (r), written (w) or both (rw).

The test reads the code the way a reviewer would: from the script's own lines it follows the functions
they call, through the libraries it includes, and notes for every ``redis.call`` which key it is given
(a ``k_*`` helper, ``KEYS[n]``, a local holding one of those, or a parameter, resolved at the call
sites) and whether the command reads or writes. The header must say exactly that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources

import pytest

from taskq.keys import TEMPLATES
from taskq.scripts import INCLUDE

LUA = resources.files("taskq").joinpath("lua")
SCRIPTS = sorted(
    p.name[:-4] for p in LUA.iterdir() if p.name.endswith(".lua") and not p.name.endswith("_lib.lua")
)

READS = {"GET", "HGET", "HMGET", "HGETALL", "EXISTS", "SISMEMBER", "SMEMBERS", "ZRANGE", "ZRANGEBYSCORE",
         "ZSCORE", "ZCARD", "LRANGE", "LLEN", "TTL", "PTTL"}  # fmt: skip
WRITES = {"SET", "DEL", "INCR", "INCRBY", "HSET", "HINCRBY", "HDEL", "SADD", "SREM", "ZADD", "ZREM", "LPUSH",
          "RPUSH", "LTRIM", "EXPIRE", "PEXPIRE"}  # fmt: skip
BOTH = {"ZPOPMIN"}
MULTI_KEY = {"DEL", "EXISTS"}  # every argument is a key
#: delivery_record(tag, id) names a delivery's hash: a task's (its first delivery) or its own.
DELIVERY_RECORD = {"task", "delivery"}
#: Keys a function reaches by iterating what it was handed, not through an expression: flush_counts
#: writes the keys hincr() deferred, which count at hincr's call sites.
ITERATED = {"flush_counts"}


def _read(name: str) -> str:
    return LUA.joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _code(text: str) -> str:
    """Lua text with comments blanked (strings kept), so positions and line breaks stay."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c in "\"'":
            end = i + 1
            while text[end] != c:
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            i = end + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            out.append(" " * (end - i))
            i = end
        else:
            out.append(c)
            i += 1
    return "".join(out)


BLOCK = re.compile(r"\b(function|if|do|repeat|end|until)\b|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'")


def _block_end(code: str, start: int) -> int:
    """The end of the block opened by the keyword at `start` (function, if, do)."""
    depth = 0
    for m in BLOCK.finditer(code, start):
        word = m.group(1)
        if word in ("function", "if", "do", "repeat"):
            depth += 1
        elif word in ("end", "until"):
            depth -= 1
            if depth == 0:
                return m.end()
    raise AssertionError(f"unclosed block at {start}")


def _args(text: str) -> list[str]:
    """The top-level comma-separated expressions of an argument list (without its parentheses)."""
    parts, depth, current, quote = [], 0, "", ""
    for c in text:
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += c
    if current.strip():
        parts.append(current.strip())
    return parts


def _call_args(code: str, open_paren: int) -> str:
    depth = 0
    for i in range(open_paren, len(code)):
        depth += code[i] == "("
        depth -= code[i] == ")"
        if depth == 0:
            return code[open_paren + 1 : i]
    raise AssertionError("unclosed call")


@dataclass
class Unit:
    """A function (or a script's main chunk): its parameters and code."""

    name: str
    params: list[str]
    code: str
    aliases: dict[str, set[str]] = field(default_factory=dict)  # local -> key families it may hold


FUNCTION = re.compile(r"\blocal function (\w+)\(([^)]*)\)")
HELPER = re.compile(r"\bk_(\w+)\(")
KEYS_REF = re.compile(r"^KEYS\[(\d+)\]$")


def _units(name: str) -> tuple[Unit, dict[str, Unit]]:
    """The script's main chunk and every function of it and of the libraries it includes."""
    functions: dict[str, Unit] = {}
    main = ""
    files, seen = [name], set()
    while files:
        current = files.pop()
        code = _code(_read(current))
        files += [lib for lib in INCLUDE.findall(_read(current)) if lib not in seen]
        seen.update(files)
        rest, at = [], 0
        for m in FUNCTION.finditer(code):
            if m.start() < at:
                continue  # nested in a function already taken
            end = _block_end(code, m.start() + len("local "))
            params = [p.strip() for p in m.group(2).split(",") if p.strip()]
            functions[m.group(1)] = Unit(m.group(1), params, code[m.end() : end])
            rest.append(code[at : m.start()])
            at = end
        rest.append(code[at:])
        if current == name:
            main = "".join(rest)
    return Unit("<main>", [], main), functions


def _families(expr: str, unit: Unit) -> set[str] | None:
    """What a key expression names: key families ("org"), "KEYS[n]", or a parameter ("param:i");
    None when it names nothing known."""
    expr = expr.strip()
    if m := re.fullmatch(r"k_(\w+)\(.*\)", expr, re.S):
        return {m.group(1)}
    if m := KEYS_REF.match(expr):
        return {f"KEYS[{m.group(1)}]"}
    if expr in unit.aliases:
        return unit.aliases[expr]
    if expr in unit.params:
        return {f"param:{unit.params.index(expr)}"}
    return None


ASSIGN = re.compile(r"(?:\blocal\s+)?((?:\w+\s*,\s*)*\w+)\s*=(?!=)\s*([^\n]+)")


def _aliases(unit: Unit) -> None:
    """Locals that hold a key: assigned a k_* helper, KEYS[n], delivery_record(), or another such local."""
    for _ in range(3):  # an alias of an alias
        for m in ASSIGN.finditer(unit.code):
            names = [n.strip() for n in m.group(1).split(",")]
            value = m.group(2).strip()
            if names[0] in ("if", "elseif", "while", "until", "return"):
                continue
            if value.startswith("delivery_record("):
                unit.aliases.setdefault(names[0], set()).update(DELIVERY_RECORD)
                continue
            for target, expr in zip(names, _args(value), strict=False):
                found = _families(expr, unit)
                if found and not any(f.startswith("param:") for f in found):
                    unit.aliases.setdefault(target, set()).update(found)


CALL = re.compile(r"\b(\w+)\(")


Access = dict[str, set[str]]  # key family, KEYS[n] or "param:<i>" -> {"r", "w"}


def _reached(main: Unit, functions: dict[str, Unit]) -> dict[str, Unit]:
    """The script's main chunk and the functions it calls, directly or not."""
    reached, todo = {main.name: main}, [main]
    while todo:
        unit = todo.pop()
        for callee in CALL.findall(unit.code):
            if callee in functions and callee not in reached:
                reached[callee] = functions[callee]
                todo.append(functions[callee])
    return reached


def _direct(name: str, unit: Unit) -> Access:
    """What the function's own redis.call()s read and write."""
    access: Access = {}
    for m in re.finditer(r"redis\.call\(", unit.code):
        args = _args(_call_args(unit.code, m.end() - 1))
        command = args[0].strip("\"'").upper()
        if command == "TIME":
            continue
        assert command in READS | WRITES | BOTH, f"{command}: add it to READS or WRITES"
        mode = {"r"} if command in READS else {"w"} if command in WRITES else {"r", "w"}
        for key in args[1:] if command in MULTI_KEY else args[1:2]:
            targets = _families(key, unit)
            assert targets is not None or unit.name in ITERATED, f"{name}: {command} on {key!r}, unknown"
            for target in targets or ():
                access.setdefault(target, set()).update(mode)
    return access


def _pass_parameters(reached: dict[str, Unit], access: dict[str, Access]) -> bool:
    """One round of callers taking on what callees do with the keys they pass; True if it added any."""
    changed = False
    for unit in reached.values():
        for m in CALL.finditer(unit.code):
            callee = reached.get(m.group(1))
            if callee is None or callee is unit or unit.code[: m.start()].endswith("function "):
                continue
            for index, expr in enumerate(_args(_call_args(unit.code, m.end() - 1))):
                given = access[callee.name].get(f"param:{index}")
                if not given:
                    continue
                for target in _families(expr, unit) or ():
                    mine = access[unit.name].setdefault(target, set())
                    changed |= not given <= mine
                    mine.update(given)
    return changed


def _modes(name: str) -> dict[str, str]:
    """Key family or KEYS[n] -> "r", "w" or "rw", for everything the script reaches."""
    main, functions = _units(name)
    for unit in [main, *functions.values()]:
        _aliases(unit)
    reached = _reached(main, functions)
    access = {unit.name: _direct(name, unit) for unit in reached.values()}
    while _pass_parameters(reached, access):
        pass
    modes: Access = {}
    for held in access.values():
        for target, mode in held.items():
            if not target.startswith("param:"):
                modes.setdefault(target, set()).update(mode)
    return {target: "".join(sorted(mode)) for target, mode in modes.items()}


def _header(name: str) -> str:
    lines = []
    for line in _read(name).splitlines():
        if not line.startswith("--") or line.startswith("--#include"):
            break
        lines.append(line)
    return "\n".join(lines)


FAMILY_NAMES = {
    "T" + template.removeprefix("{tag}").replace("{", "<").replace("}", ">"): name
    for name, template in TEMPLATES.items()
}
#: "-- KEYS[1]  rw  leases  T:proc"; "-" for a key passed to name the call's slot but reached as a
#: derived key instead.
DECLARED_KEY = re.compile(r"^--\s+(KEYS\[\d+\])\s+(r|w|rw|-)\s", re.M)
#: "-- Derived keys ...:" then "rw T:t:<id>" entries, up to an empty comment line.
DERIVED = re.compile(r"^-- Derived keys(.*?)^--$", re.M | re.S)
DECLARED_FAMILY = re.compile(r"(?<!\S)(r|w|rw)\s+(T:\S+)")


def _declared(name: str) -> dict[str, str]:
    header = _header(name) + "\n"
    declared = {key: mode for key, mode in DECLARED_KEY.findall(header)}
    block = DERIVED.search(header)
    for mode, family in DECLARED_FAMILY.findall(block.group(1) if block else ""):
        assert family in FAMILY_NAMES, f"{name}: {family} is no key family of taskq.keys"
        declared[FAMILY_NAMES[family]] = mode
    return declared


def _shown(target: str) -> str:
    if target.startswith("KEYS"):
        return target
    return "T" + TEMPLATES[target].removeprefix("{tag}").replace("{", "<").replace("}", ">")


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_header_declares_every_key_the_script_touches_and_how(name: str) -> None:
    found = _modes(name)
    declared = {target: mode for target, mode in _declared(name).items() if mode != "-"}
    touched = ", ".join(f"{mode} {_shown(target)}" for target, mode in sorted(found.items()))
    assert declared == found, f"{name}.lua touches: {touched}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_header_declares_every_argv_the_script_reads(name: str) -> None:
    header = _header(name)
    fixed = {int(n) for n in re.findall(r"ARGV\[(\d+)\](?!\.\.)", header)}
    open_from = [int(n) for n in re.findall(r"ARGV\[(\d+)\.\.\]", header)]
    used = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", _code(_read(name)))}
    undeclared = {n for n in used if n not in fixed and not any(n >= start for start in open_from)}
    assert not undeclared, f"{name}.lua reads ARGV {sorted(undeclared)} its header does not list"


def test_the_reader_sees_keys_through_libraries_aliases_and_parameters() -> None:
    """ack.lua writes T:metrics only through count() -> hincr(d, key, ...) in metrics_lib, the task hash
    through finish()'s local tkey, and reads lanes only in index_lane(), three calls down from
    flush_queue(); claim.lua hands KEYS[3] to hincr() and reads it itself. All must be found, or the
    check above proves nothing."""
    modes = _modes("ack")
    assert modes["metrics"] == "w" and modes["task"] == "rw" and modes["stats"] == "w"
    assert modes["wh_due"] == "w" and modes["batch"] == "rw" and modes["lane"] == "r"
    assert "KEYS[1]" not in modes  # ack.lua is given T:proc as KEYS[1] and reaches it as k_proc
    assert _modes("claim")["KEYS[3]"] == "rw"
