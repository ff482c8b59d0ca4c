"""Each Redis script carries only the shared helpers it uses (``_scripts.helpers``).

No server needed: the scripts are read as text. That every script still runs (no helper it
calls left out: Redis refuses a script that reads an undefined global) is shown by the
conformance suite, which runs every script on a live server.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from threadkeep.backends.redis._scripts import SCRIPTS, code, helpers

FOLDER = resources.files("threadkeep.backends.redis").joinpath("scripts")
LIB = FOLDER.joinpath("_lib.lua").read_text(encoding="utf-8")
_DEFINED = re.compile(r"^local (?:function )?([A-Za-z_]\w*)\b", re.M)
LIB_NAMES = set(_DEFINED.findall(LIB)) - {"B"}
_WORD = re.compile(r"[A-Za-z_]\w*")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_helper_a_script_uses_is_defined_before_it(name: str) -> None:
    text = SCRIPTS[name]
    body = FOLDER.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    defined = _DEFINED.findall(text[: -len(body)])  # the helpers (the body may shadow one)
    assert len(defined) == len(set(defined)), "a helper defined twice"
    lines = text.splitlines()
    seen: set[str] = set()
    for line in lines:
        used = set(_WORD.findall(code(line))) & LIB_NAMES
        match = _DEFINED.match(line)
        own = {match.group(1)} if match else set()
        assert used - own <= seen, (name, line, sorted(used - own - seen))
        seen |= own


def test_a_script_gets_only_what_it_uses() -> None:
    shared = helpers(LIB, "local row = live(ARGV[2], nil, 0)\nreturn row ~= nil")
    defined = set(_DEFINED.findall(shared))
    # live and what it calls, nothing else
    assert defined == {"B", "kc", "hgetall", "is_expired", "live"}, defined
    assert helpers(LIB, "return 1") == LIB[: LIB.index("local function kc")]


def test_the_append_script_leaves_out_what_appends_never_call() -> None:
    defined = set(_DEFINED.findall(SCRIPTS["append"]))
    assert {"save", "emit", "remember_key", "trim_whole"} <= defined
    assert not defined & {"erase", "reap", "events_after", "find_open", "kf", "flatten"}
    # it reads its fields itself (each definition carried costs every call)
    assert not defined & {"live_fields", "live", "hgetall", "is_expired", "forget_keys"}
    assert len(SCRIPTS["append"]) < len(LIB) + len(FOLDER.joinpath("append.lua").read_text())


@pytest.mark.parametrize("name", ["read", "load_state"])
def test_the_standalone_scripts_carry_no_helpers(name: str) -> None:
    assert SCRIPTS[name].split("\n", 1)[1].startswith("-- standalone")
    assert set(_DEFINED.findall(SCRIPTS[name])).isdisjoint(LIB_NAMES)
