"""The Lua scripts, read once from ``scripts/`` with the shared helpers they use prepended.

Each script gets only the definitions of ``_lib.lua`` it uses (directly or through another
helper), in the library's order: Redis runs a script's whole text on every call, so each
definition it carries (a closure made, a key name joined) costs server time on every call,
used or not (the window read and the state load carry one, ``alive``, the liveness rule, and
mirror the key names they need). The drivers register them with redis-py's
``register_script`` (their SHA1 digests): on a standalone server a driver sends EVALSHA itself
and, after NOSCRIPT (a server restart or ``SCRIPT FLUSH``), ``SCRIPT LOAD`` and EVALSHA again
in one round trip (``RedisBackend._evalsha``); on a Cluster, and followed by ``WAIT``
(``?replicas=``), they run through redis-py's ``Script``, which does the same in two.

Each script starts with the ``#!lua`` shebang (Redis 7): without it Redis runs a script in a
compatibility mode that lets it touch keys of any slot; with it, Redis Cluster refuses a script
that strays from the slot of its routing key, so the single-slot design is checked by the
server, not just by convention. Scripts that change data get no flags, so none runs on a stale
replica or past ``maxmemory``; the read-only ones are flagged ``no-writes`` (``READ_ONLY``).
"""

from __future__ import annotations

import re
from importlib import resources
from types import MappingProxyType
from typing import Final

__all__ = ["READ_ONLY", "SCRIPTS", "code", "helpers"]


#: Scripts that only read: flagged ``no-writes``, so Redis runs them on a server that is out
#: of memory (``maxmemory`` with ``noeviction`` refuses the others) and refuses any write in them.
READ_ONLY: Final = frozenset({"counts", "events", "find_open", "list", "load_state", "read"})

#: A top-level definition of the library: ``local function name(`` or ``local NAME =``.
_DEFINITION = re.compile(r"^local (?:function )?([A-Za-z_]\w*)\b")
_WORD = re.compile(r"[A-Za-z_]\w*")


def _definitions(lib: str) -> tuple[str, list[tuple[str, str]]]:
    """Split the library into its head and its top-level definitions.

    The head is what precedes the first helper (``local B``); each definition comes with the
    comment lines just above it: ``(head, [(name, text)])``.
    """
    lines = lib.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _DEFINITION.match(line)]
    cut: list[int] = []  # where each definition's text begins: its comment lines included
    for i in starts:
        j = i
        while j > 0 and lines[j - 1].startswith("--"):
            j -= 1
        cut.append(j)
    head_end = cut[1]  # the first definition is ``local B = ARGV[1]``: part of the head
    parts = []
    for n in range(1, len(starts)):
        end = cut[n + 1] if n + 1 < len(starts) else len(lines)
        match = _DEFINITION.match(lines[starts[n]])
        assert match is not None
        parts.append((match.group(1), "".join(lines[cut[n] : end])))
    return "".join(lines[:head_end]), parts


def code(text: str) -> str:
    """``text`` without its Lua comments (a name in a comment is not a use)."""
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def helpers(lib: str, script: str) -> str:
    """Return the part of ``lib`` that ``script`` needs.

    That is its head and every definition the script's code uses (comments aside), directly
    or through other definitions, in the library's order.
    """
    head, parts = _definitions(lib)
    uses = {name: set(_WORD.findall(code(text))) - {name} for name, text in parts}
    wanted: set[str] = set()
    todo = set(_WORD.findall(code(script))) & set(uses)
    while todo:
        name = todo.pop()
        wanted.add(name)
        todo |= (uses[name] & set(uses)) - wanted
    return head + "".join(text for name, text in parts if name in wanted)


def _load() -> dict[str, str]:
    folder = resources.files(__package__).joinpath("scripts")
    lib = folder.joinpath("_lib.lua").read_text(encoding="utf-8")
    scripts = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".lua") and not entry.name.startswith("_"):
            text = entry.read_text(encoding="utf-8")
            shared = helpers(lib, text) + "\n"
            name = entry.name.removesuffix(".lua")
            shebang = "#!lua flags=no-writes\n" if name in READ_ONLY else "#!lua\n"
            scripts[name] = shebang + shared + text
    return scripts


#: script name (the file name without ``.lua``) → Lua source.
SCRIPTS: Final = MappingProxyType(_load())
