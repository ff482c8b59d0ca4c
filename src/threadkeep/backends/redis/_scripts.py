"""The Lua scripts, read once from ``scripts/`` with the shared helpers prepended.

A script whose first line starts with ``-- standalone`` is sent without the helpers (the
window read, for speed). The drivers register them with redis-py's ``register_script``: it
runs them with EVALSHA and loads them again after NOSCRIPT (a server restart or
``SCRIPT FLUSH``).

Each script starts with the ``#!lua`` shebang (Redis 7): without it Redis runs a script in a
compatibility mode that lets it touch keys of any slot; with it, Redis Cluster refuses a script
that strays from the slot of its routing key, so the single-slot design is checked by the
server, not just by convention. Scripts that change data get no flags, so none runs on a stale
replica or past ``maxmemory``; the read-only ones are flagged ``no-writes`` (``READ_ONLY``).
"""

from __future__ import annotations

from importlib import resources
from types import MappingProxyType
from typing import Final

__all__ = ["READ_ONLY", "SCRIPTS"]


#: A script starting with this comment gets no shared helpers prepended.
_STANDALONE = "-- standalone"

#: Scripts that only read: flagged ``no-writes``, so Redis runs them on a server that is out
#: of memory (``maxmemory`` with ``noeviction`` refuses the others) and refuses any write in them.
READ_ONLY: Final = frozenset({"counts", "events", "find_open", "list", "load_state", "read"})


def _load() -> dict[str, str]:
    folder = resources.files(__package__).joinpath("scripts")
    lib = folder.joinpath("_lib.lua").read_text(encoding="utf-8")
    scripts = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".lua") and not entry.name.startswith("_"):
            text = entry.read_text(encoding="utf-8")
            helpers = "" if text.startswith(_STANDALONE) else lib + "\n"
            name = entry.name.removesuffix(".lua")
            shebang = "#!lua flags=no-writes\n" if name in READ_ONLY else "#!lua\n"
            scripts[name] = shebang + helpers + text
    return scripts


#: script name (the file name without ``.lua``) → Lua source.
SCRIPTS: Final = MappingProxyType(_load())
