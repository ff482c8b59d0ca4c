"""Message payloads: the JSON check, the role mapping, link bits and derived text (no I/O)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from threadkeep import InvalidInput
from threadkeep._rules import parts
from threadkeep._rules.parts import CALLS, RESULT
from threadkeep._rules.validate import MAX_DEPTH

MIB = 1024 * 1024

# ---- dump_payload -------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(json_values, max_size=4) | st.dictionaries(st.text(), json_values, max_size=4))
def test_a_payload_reads_back_deep_equal(payload):
    try:
        text = parts.dump_payload(payload, MIB)
    except InvalidInput as exc:  # lone surrogates are the one JSON-able value refused
        assert "Unicode" in str(exc)
        return
    assert text is not None
    assert json.loads(text) == payload


def test_signatures_and_base64_are_kept_byte_exact():
    payload = [
        {"type": "thinking", "thinking": "Let me see…\n", "signature": "EqQBCgIYAhIM+/==\u00e9"},
        {"type": "redacted_thinking", "data": "AAEC\\u0000/+=="},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo" * 1000}},
    ]  # fmt: skip
    text = parts.dump_payload(payload, MIB)
    assert text is not None
    assert json.loads(text) == payload


def test_none_means_no_payload():
    assert parts.dump_payload(None, MIB) is None


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ("text", "object or array"),
        (42, "object or array"),
        ((1, 2), "object or array"),
        ({"a": (1, 2)}, "tuple"),
        ({"a": {1: "x"}}, "keys must be strings"),
        ([{"b": {None: 1}}], "keys must be strings"),
        ({"a": math.nan}, "NaN"),
        ([math.inf], "NaN or Infinity"),
        ({"a": {1, 2}}, "set"),
        ({"a": b"bytes"}, "bytes"),
        ({"a": "\ud800"}, "Unicode"),
        ({"a": object()}, "object"),
    ],
)
def test_values_that_would_not_read_back_are_refused(payload, says):
    with pytest.raises(InvalidInput, match=says) as info:
        parts.dump_payload(payload, MIB)
    assert info.value.field == "payload"


def test_nesting_is_bounded():
    ok: object = 1
    for _ in range(MAX_DEPTH):
        ok = [ok]
    assert parts.dump_payload(ok, MIB) is not None
    with pytest.raises(InvalidInput, match="deeper than"):
        parts.dump_payload([ok], MIB)
    deep: object = 1
    for _ in range(5000):  # far past Python's recursion limit: still a clear error
        deep = {"a": deep}
    with pytest.raises(InvalidInput, match="deeper than"):
        parts.dump_payload(deep, MIB)


def test_size_limit_counts_utf8_bytes():
    limit = 100
    fits = {"t": "é" * 43}  # {"t":""} is 8 bytes, each é is 2
    assert len(json.dumps(fits, ensure_ascii=False, separators=(",", ":")).encode()) == 94
    assert parts.dump_payload(fits, limit) is not None
    with pytest.raises(InvalidInput, match="is 104 bytes; the limit is 100 bytes"):
        parts.dump_payload({"t": "é" * 48}, limit)


# ---- role mapping -------------------------------------------------------------------------

ROLE_CASES = [
    # OpenAI Responses items
    ({"role": "user", "content": "hi"}, "user"),
    ({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
     "user"),
    ({"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
      "content": [{"type": "output_text", "text": "yo", "annotations": []}]}, "assistant"),
    ({"role": "developer", "content": "be brief"}, "system"),
    ({"role": "system", "content": "be brief"}, "system"),
    ({"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}, "assistant"),
    ({"type": "function_call_output", "call_id": "c1", "output": "ok"}, "tool"),
    ({"type": "reasoning", "id": "rs_1", "summary": []}, "assistant"),
    ({"type": "web_search_call", "id": "ws_1", "status": "completed",
      "action": {"type": "search", "query": "q"}}, "assistant"),
    ({"type": "computer_call_output", "call_id": "c2", "output": {}}, "tool"),
    ({"type": "custom_tool_call", "call_id": "c3", "name": "g", "input": "x"}, "assistant"),
    ({"type": "custom_tool_call_output", "call_id": "c3", "output": "y"}, "tool"),
    ({"type": "mcp_approval_request", "id": "a1", "name": "n", "arguments": "{}",
      "server_label": "s"}, "assistant"),
    ({"type": "mcp_approval_response", "approval_request_id": "a1", "approve": True}, "tool"),
    ({"type": "compaction", "encrypted_content": "x"}, "assistant"),
    ({"type": "item_reference", "id": "msg_1"}, "assistant"),
    ({"type": "additional_tools", "tools": []}, "system"),
    # OpenAI Chat Completions
    ({"role": "assistant", "content": None,
      "tool_calls": [{"id": "c1", "type": "function",
                      "function": {"name": "f", "arguments": "{}"}}]}, "assistant"),
    ({"role": "tool", "tool_call_id": "c1", "content": "ok"}, "tool"),
    # Anthropic
    ({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                                  {"type": "text", "text": "and"}]}, "tool"),
    ({"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                                       {"type": "text", "text": "hi"}]}, "assistant"),
    ({"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]},
     "user"),
    ([{"type": "tool_use", "id": "t1", "name": "f", "input": {}}], "assistant"),
    ([{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}], "tool"),
    ({"type": "thinking", "thinking": "t", "signature": "s"}, "assistant"),
    ({"role": "assistant", "content": ""}, "assistant"),
    # Claude Agent SDK transcript entries
    ({"type": "user", "uuid": "u1", "message": {"role": "user", "content": "hi"}}, "user"),
    ({"type": "assistant", "uuid": "u2",
      "message": {"role": "assistant", "content": [{"type": "text", "text": "yo"}]}},
     "assistant"),
    # pydantic-ai
    ({"kind": "request", "parts": [{"part_kind": "system-prompt", "content": "s"},
                                   {"part_kind": "user-prompt", "content": "hi"}]}, "user"),
    ({"kind": "request", "parts": [{"part_kind": "tool-return", "tool_name": "f",
                                    "content": 3, "tool_call_id": "p1"}]}, "tool"),
    ({"kind": "response", "parts": [{"part_kind": "text", "content": "yo"}]}, "assistant"),
]  # fmt: skip


@pytest.mark.parametrize(("item", "role"), ROLE_CASES)
def test_role_mapping(item, role):
    assert parts.role_for(item) == role


@pytest.mark.parametrize(
    "item",
    [
        [{"type": "text", "text": "who says this?"}],
        {"type": "image", "source": {"type": "url", "url": "u"}},
        {"some": "framework record"},
        [1, 2],
        "text",
        None,
    ],
)
def test_role_mapping_refuses_to_guess(item):
    with pytest.raises(InvalidInput, match="pass its role") as info:
        parts.role_for(item)
    assert info.value.field == "role"


# ---- link bits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "payload", "bits"),
    [
        ("user", None, 0),
        ("tool", None, 0),  # a text tool message answers no call it can name
        ("assistant", {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""},
         CALLS),
        ("tool", {"type": "function_call_output", "call_id": "c", "output": ""}, RESULT),
        ("assistant", {"type": "reasoning", "id": "r", "summary": []}, CALLS),
        ("assistant", {"type": "message", "role": "assistant", "content": "x"}, 0),
        ("assistant", [{"type": "thinking", "thinking": "t", "signature": "s"}], CALLS),
        ("assistant", [{"type": "thinking", "thinking": "t", "signature": "s"},
                       {"type": "text", "text": "x"}], 0),
        ("assistant", [{"type": "text", "text": "x"},
                       {"type": "tool_use", "id": "t", "name": "f", "input": {}}], CALLS),
        # a server tool answered within its own message leaves nothing open
        ("assistant", [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
                       {"type": "web_search_tool_result", "tool_use_id": "s", "content": []},
                       {"type": "text", "text": "found"}], 0),
        ("tool", {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}, RESULT),
        ("tool", {"role": "tool", "tool_call_id": "c", "content": "ok"}, RESULT),
        ("assistant", {"kind": "response", "parts": [
            {"part_kind": "tool-call", "tool_name": "f", "args": {}, "tool_call_id": "p"}]},
         CALLS),
        ("assistant", {"opaque": "framework record"}, 0),
    ],
)  # fmt: skip
def test_link_bits(role, payload, bits):
    assert parts.link_of(role, "", payload) == bits


def test_link_names_the_calls_it_opens_and_answers():
    calls = [{"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}}
             for i in "ab"]  # fmt: skip
    call = parts.link("assistant", "", {"role": "assistant", "tool_calls": calls})
    assert (call.calls, call.answers, call.user) == (frozenset("ab"), frozenset(), False)
    result = parts.link("tool", "", [{"type": "tool_result", "tool_use_id": "a"}])
    assert (result.calls, result.answers, result.user) == (frozenset(), frozenset("a"), False)
    assert parts.link("user", "hi", None).user
    assert not parts.link("agent", "hi", None).user


# ---- parsing and text ---------------------------------------------------------------------


def test_an_opaque_payload_is_read_as_its_content():
    item = parts.parse("assistant", "summary for people", {"__enc__": 1, "payload": "…"})
    assert item.dialect is None
    assert [p.part for p in item.pieces] == [parts.Text("summary for people")]


def test_a_message_without_payload_or_text_has_no_parts():
    assert parts.parse("assistant", "", None).pieces == ()


def test_images_become_urls_both_ways():
    item = parts.parse("user", "", [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
    ])  # fmt: skip
    assert [p.part for p in item.pieces] == [
        parts.Image("data:image/png;base64,AA=="),
        parts.Image("https://x/y.png"),
    ]


@pytest.mark.parametrize(
    ("role", "content", "payload", "text"),
    [
        ("user", "kept as typed", {"role": "user", "content": "other"}, "kept as typed"),
        ("assistant", "", {"type": "function_call", "call_id": "c", "name": "estimate",
                           "arguments": '{"zip":"78701"}'}, 'estimate({"zip":"78701"})'),
        ("tool", "", {"type": "function_call_output", "call_id": "c", "output": "450k"}, "450k"),
        ("assistant", "", [{"type": "thinking", "thinking": "secret", "signature": "s"},
                           {"type": "text", "text": "Hello"}], "Hello"),
        ("user", "", {"role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://x", "detail": "auto"}]}, "look\n[image]"),
        ("assistant", "", {"type": "reasoning", "id": "r", "summary": []}, ""),
        ("assistant", "", {"opaque": 1}, ""),
    ],
)  # fmt: skip
def test_text_of(role, content, payload, text):
    assert parts.text_of(role, content, payload) == text
