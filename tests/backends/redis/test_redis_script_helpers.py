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
    assert defined == {"B", "kc", "hgetall", "alive", "live"}, defined
    assert helpers(LIB, "return 1") == LIB[: LIB.index("local function kc")]


def test_the_append_script_leaves_out_what_appends_never_call() -> None:
    defined = set(_DEFINED.findall(SCRIPTS["append"]))
    assert {"save", "emit", "remember_key", "trim_whole"} <= defined
    assert not defined & {"erase", "reap", "events_after", "find_open", "kf", "flatten"}
    # it reads its fields itself (each definition carried costs every call), and checks them
    # with the one liveness rule
    assert not defined & {"live_fields", "live", "hgetall", "forget_keys"}
    assert "alive" in defined
    assert len(SCRIPTS["append"]) < len(LIB) + len(FOLDER.joinpath("append.lua").read_text())


@pytest.mark.parametrize("name", ["read", "load_state"])
def test_the_hot_reads_carry_only_the_liveness_rule(name: str) -> None:
    assert set(_DEFINED.findall(SCRIPTS[name])) & LIB_NAMES == {"alive"}


#: A comparison of a conversation's expiry with a time: the liveness rule's own test.
_EXPIRY_CHECK = re.compile(r"tonumber\((?:[\w.]*\bexp\w*|v\[5\])\)\s*[<>]")


def test_the_liveness_rule_is_written_once() -> None:
    # alive() holds the one comparison of an expiry with now; every other script calls it
    # (append.lua once had its own copy inline, the window read and the state load theirs)
    texts = {f"{name}.lua": FOLDER.joinpath(f"{name}.lua").read_text() for name in SCRIPTS}
    texts["_lib.lua"] = LIB
    del texts["remember.lua"]  # a fact's expiry, not a conversation's
    found = {name: _EXPIRY_CHECK.findall(code(text)) for name, text in texts.items()}
    assert {name: hits for name, hits in found.items() if hits} == {"_lib.lua": ["tonumber(exp) >"]}
    alive = LIB[LIB.index("local function alive(") :]
    assert "tonumber(exp) > now" in alive[: alive.index("\nend\n")]
    for name in ("append", "read", "load_state", "save_state", "update", "list", "sweep"):
        body = code(texts[f"{name}.lua"])
        assert re.search(r"\b(?:alive|live|live_fields)\(", body), name
