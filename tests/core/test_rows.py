"""``_rules.rows.parse_json``: what ``json.loads`` answers, value or error, for any text."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, strategies as st

from threadkeep._rules.rows import WindowRow, parse_json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


def answer(loads: Any, text: Any) -> tuple[str, Any]:
    """The value ``loads`` returns for ``text``, or the type and message of what it raises."""
    try:
        return "value", loads(text)
    except Exception as exc:
        return "error", (type(exc), str(exc))


@pytest.mark.parametrize(
    "text",
    [
        "{}", '{"a":1}', '{"a": [1, 2.5, null, true, "\\u00e9"]}', "[]", '"x"', "3", "-0.0",
        "1e400", "NaN", "Infinity", " {}", "{} ", "\n[1]\t", "\ufeff{}", "{} x", "{}{}", "",
        " ", "{", '{"a":}', "nul", "[1,]", b'{"a":1}', bytearray(b"[1]"), b"\xef\xbb\xbf{}",
        '{"a":1,"a":2}', '"\\ud800"', "9" * 5000,
    ],
)  # fmt: skip
def test_parse_json_answers_as_json_loads(text: Any) -> None:
    assert answer(parse_json, text) == answer(json.loads, text)


@given(JSON, st.sampled_from([(",", ":"), (", ", ": ")]), st.booleans())
def test_parse_json_reads_any_json_text_as_json_loads(value: Any, seps: Any, ascii: bool) -> None:
    text = json.dumps(value, separators=seps, ensure_ascii=ascii)
    assert parse_json(text) == json.loads(text) == value


@given(st.text(max_size=30))
def test_parse_json_answers_any_text_as_json_loads(text: str) -> None:
    got, expected = answer(parse_json, text), answer(json.loads, text)
    if got[0] == "value" and isinstance(got[1], float) and math.isnan(got[1]):
        assert isinstance(expected[1], float) and math.isnan(expected[1])
    else:
        assert got == expected


def test_a_window_rows_payload_is_parsed() -> None:
    assert WindowRow("user", "", '{"type":"x"}', 0).payload == {"type": "x"}
    assert WindowRow("user", "hi", None, 0).payload is None
