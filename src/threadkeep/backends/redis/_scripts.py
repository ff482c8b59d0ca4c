"""The Lua scripts, read once from ``scripts/`` with the shared helpers prepended.

The drivers register them with redis-py's ``register_script``: it runs them with EVALSHA and
loads them again after NOSCRIPT (a server restart or ``SCRIPT FLUSH``).
"""

from __future__ import annotations

from importlib import resources
from types import MappingProxyType
from typing import Final

__all__ = ["SCRIPTS"]


def _load() -> dict[str, str]:
    folder = resources.files(__package__).joinpath("scripts")
    lib = folder.joinpath("_lib.lua").read_text(encoding="utf-8")
    return {
        entry.name.removesuffix(".lua"): lib + "\n" + entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".lua") and not entry.name.startswith("_")
    }


#: script name (the file name without ``.lua``) → Lua source.
SCRIPTS: Final = MappingProxyType(_load())
