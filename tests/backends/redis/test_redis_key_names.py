"""The Python legend of the Redis keys (``_keys.Keys``) equals the Lua key builders.

No server needed: the builders at the top of ``scripts/_lib.lua`` (and the two mirrored in
``read.lua`` and ``load_state.lua``, which carry no key builder) are read as text and evaluated
for sample arguments.
"""

from __future__ import annotations

import re
from dataclasses import replace
from importlib import resources

import pytest

from tests.core.test_decide import RETENTION, row
from threadkeep.backends.redis._codec import FIELDS, encode_conversation
from threadkeep.backends.redis._keys import Keys

SCRIPTS = resources.files("threadkeep.backends.redis").joinpath("scripts")
LIB = SCRIPTS.joinpath("_lib.lua").read_text(encoding="utf-8")
KEYS = Keys("pfx")
ARGS = {"id": "c-1", "tenant": "acme:eu", "contact": "+351", "status": "active", "stage": "Q1"}

#: Lua builder → the Keys method or property that names the same key.
LEGEND = {
    "kc": lambda a: KEYS.conversation(a["id"]),
    "km": lambda a: KEYS.messages(a["id"]),
    "ki": lambda a: KEYS.idempotency(a["id"]),
    "kiq": lambda a: KEYS.idempotency_order(a["id"]),
    "krq": lambda a: KEYS.retry_order(a["id"]),
    "ks": lambda a: KEYS.states(a["id"]),
    "ke": lambda a: KEYS.event_ids(a["id"]),
    "kt": lambda a: KEYS.tenant(a["tenant"]),
    "kts": lambda a: KEYS.tenant_status(a["status"], a["tenant"]),
    "kct": lambda a: KEYS.contact(a["tenant"], a["contact"]),
    "kf": lambda a: KEYS.facts(a["tenant"], a["contact"]),
    "kxs": lambda a: KEYS.status_counts(a["status"], a["tenant"]),
    "kxg": lambda a: KEYS.stage_counts(a["tenant"], a["stage"]),
    "kgs": lambda a: KEYS.stages(a["tenant"]),
    "K_EXP": lambda a: KEYS.expiries,
    "K_IDLE": lambda a: KEYS.idle,
    "K_FX": lambda a: KEYS.fact_expiries,
    "K_ORPH": lambda a: KEYS.orphans,
    "K_EV": lambda a: KEYS.events,
    "K_EVN": lambda a: KEYS.event_number,
    "K_EVT": lambda a: KEYS.event_floor,
}

_FUNCTION = re.compile(r"^local function (k\w+)\((\w+)(?:, (\w+))?\) return (.+?) end", re.M)
_CONSTANT = re.compile(r"^local (K_\w+) = (B \.\. '\w+')", re.M)


def _evaluate(expression: str, values: dict[str, str]) -> str:
    """Evaluate a Lua concatenation of ``B``, 'literals', arguments and #arguments."""
    out = []
    for part in (p.strip() for p in expression.split("..")):
        if part == "B":
            out.append(KEYS.base)
        elif part.startswith("'"):
            out.append(part.strip("'"))
        elif part.startswith("#"):
            out.append(str(len(values[part[1:]])))
        else:
            out.append(values[part])
    return "".join(out)


def _builders() -> dict[str, tuple[tuple[str, ...], str]]:
    found = {
        name: (tuple(a for a in (first, second) if a), body)
        for name, first, second, body in _FUNCTION.findall(LIB)
    }
    found.update({name: ((), body) for name, body in _CONSTANT.findall(LIB)})
    return found


def test_every_lua_builder_has_its_python_name() -> None:
    assert set(_builders()) == set(LEGEND)


@pytest.mark.parametrize("name", sorted(LEGEND))
def test_each_builder_makes_the_same_key(name: str) -> None:
    params, body = _builders()[name]
    values = {param: ARGS[param] for param in params}
    assert _evaluate(body, values) == LEGEND[name](ARGS)


@pytest.mark.parametrize(
    ("script", "mirrored"), [("read.lua", ("c", "m")), ("load_state.lua", ("c", "s"))]
)
def test_the_hot_reads_build_the_same_keys(script: str, mirrored: tuple[str, ...]) -> None:
    text = SCRIPTS.joinpath(script).read_text(encoding="utf-8")
    for letter in mirrored:
        assert f"B .. '{letter}:' .. id" in text
        built = _evaluate(f"B .. '{letter}:' .. id", {"id": "c-1"})
        assert built == _evaluate(_builders()["k" + letter][1], {"id": "c-1"})
    assert _evaluate("B .. 'c:' .. id", {"id": "c-1"}) == KEYS.conversation("c-1")


def test_every_conversation_field_is_in_the_legend() -> None:
    full = row(agent_id="bot", channel="web", retention=replace(RETENTION, max_messages=5))
    written = set(encode_conversation(full)[::2])
    scripts_only = {"lt", "lu", "lk", "stk", "ix"}
    assert written | scripts_only == set(FIELDS)
    for field in scripts_only:  # … and the scripts do write them
        assert any(
            f"'{field}'" in entry.read_text(encoding="utf-8")
            or f".{field} =" in entry.read_text(encoding="utf-8")
            for entry in SCRIPTS.iterdir()
            if entry.name.endswith(".lua")
        ), field


def test_a_sharded_tag_builds_the_same_names_under_its_own_hash_tag() -> None:
    """``?shard=tenant``: the scripts get the tag's base, so every builder above follows it."""
    tagged = KEYS.at("k7")
    assert tagged.base == "pfx{pfx:k7}:"
    assert tagged.conversation("c-1") == "pfx{pfx:k7}:c:c-1"
    assert tagged.events == "pfx{pfx:k7}:ev"
    assert tagged.base.startswith("pfx{") and KEYS.pattern == "pfx{*"  # SCAN finds both


def test_the_home_keys_of_a_sharded_store_are_in_the_stores_own_slot() -> None:
    assert (KEYS.layout, KEYS.tags, KEYS.aliases) == (
        "pfx{pfx}:layout", "pfx{pfx}:tags", "pfx{pfx}:aliases"
    )  # fmt: skip
