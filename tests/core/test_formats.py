"""context() formats: every kind of stored message, in every format, as the real SDKs accept.

Each exchange below is what one framework or provider stores; each is rendered alone and mixed
with the others in random histories, cut at every window size the rules allow, and checked
against the ``anthropic`` and ``openai`` packages' request types and the APIs' rules
(``_provider_rules``). No network: these are the SDKs' own type definitions.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from tests.core._provider_rules import CHECKS, VERSIONS
from threadkeep import InvalidInput, formats
from threadkeep._rules import parts, windows

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwAD"
    + "hgGAWjR9awAAAABJRU5ErkJggg=="
)
SIGNATURE = "EqQBCkgIARABGAIiQHVb0a+/=="  # thinking signatures must come back byte-exact


@dataclass(frozen=True)
class M:
    role: str
    content: str = ""
    payload: Any = None


Exchange = Callable[[str], list[M]]


def plain(n: str) -> list[M]:
    return [M("user", f"question {n}"), M("assistant", f"answer {n}")]


def handoff(n: str) -> list[M]:
    return [M("user", f"can a person help? {n}"), M("agent", f"Jorge here {n}"),
            M("system", f"note {n}"), M("tool", f"raw tool text {n}")]  # fmt: skip


def anthropic_tools(n: str) -> list[M]:
    a, b = f"toolu_a{n}", f"toolu_b{n}"
    return [
        M("user", "", {"role": "user", "content": f"price of my house? {n}"}),
        M("assistant", "", [
            {"type": "thinking", "thinking": "I need the estimate.", "signature": SIGNATURE},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": a, "name": "estimate", "input": {"zip": "78701"}},
            {"type": "tool_use", "id": b, "name": "photo", "input": {}}]),
        M("tool", "", {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": a, "content": "450k"},
            {"type": "tool_result", "tool_use_id": b, "is_error": True, "content": [
                {"type": "text", "text": "blurry"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}}]}]}),
        M("assistant", "", [{"type": "redacted_thinking", "data": "opaque=="},
                            {"type": "text", "text": f"About 450k {n}."}]),
    ]  # fmt: skip


def anthropic_media(n: str) -> list[M]:
    return [
        M("user", "", {"role": "user", "content": [
            {"type": "text", "text": f"here {n}", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                            "data": "deed"}}]}),
        M("assistant", "", [
            {"type": "server_tool_use", "id": f"srvtoolu_{n}", "name": "web_search",
             "input": {"query": "comps"}},
            {"type": "web_search_tool_result", "tool_use_id": f"srvtoolu_{n}", "content": []},
            {"type": "text", "text": "Nothing found."}]),
    ]  # fmt: skip


def chat_tools(n: str) -> list[M]:
    a, b = f"call_a{n}", f"call_b{n}"
    return [
        M("user", "", {"role": "user", "content": [
            {"type": "text", "text": f"what is it worth {n}"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}),
        M("assistant", "", {"role": "assistant", "content": None, "tool_calls": [
            {"id": a, "type": "function", "function": {"name": "estimate", "arguments": "{}"}},
            {"id": b, "type": "function", "function": {"name": "comps", "arguments": "{}"}}]}),
        M("tool", "", {"role": "tool", "tool_call_id": a, "content": "450k"}),
        M("tool", "", {"role": "tool", "tool_call_id": b, "content": [
            {"type": "text", "text": "3 comps"}]}),
        M("assistant", "", {"role": "assistant", "content": f"Around 450k {n}", "name": "bot"}),
    ]  # fmt: skip


def responses_tools(n: str) -> list[M]:
    a, b = f"call_a{n}", f"call_b{n}"
    return [
        M("user", "", {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": f"worth {n}?"},
            {"type": "input_image", "image_url": "https://example.com/h.png", "detail": "low"}]}),
        M("assistant", "", {"type": "reasoning", "id": f"rs_1{n}", "summary": [],
                            "encrypted_content": "gAAAA=="}),
        M("assistant", "", {"type": "function_call", "call_id": a, "name": "estimate",
                            "arguments": '{"zip":"78701"}', "id": f"fc_a{n}",
                            "status": "completed"}),
        M("assistant", "", {"type": "function_call", "call_id": b, "name": "comps",
                            "arguments": "{}"}),
        M("tool", "", {"type": "function_call_output", "call_id": a, "output": "450k"}),
        M("tool", "", {"type": "function_call_output", "call_id": b, "output": [
            {"type": "input_text", "text": "chart"},
            {"type": "input_image", "image_url": "https://example.com/c.png", "detail": "auto"}]}),
        M("assistant", "", {"type": "reasoning", "id": f"rs_2{n}",
                            "summary": [{"type": "summary_text", "text": "done"}]}),
        M("assistant", "", {"type": "message", "role": "assistant", "id": f"msg_{n}",
                            "status": "completed", "content": [
                                {"type": "output_text", "text": f"About 450k {n}",
                                 "annotations": []}]}),
    ]  # fmt: skip


def responses_natives(n: str) -> list[M]:
    return [
        M("system", "", {"role": "developer", "content": "Be brief."}),
        M("user", "", {"role": "user", "content": f"search {n}"}),
        M("assistant", "", {"type": "web_search_call", "id": f"ws_{n}", "status": "completed",
                            "action": {"type": "search", "query": "comps"}}),
        M("assistant", "", {"type": "custom_tool_call", "call_id": f"ct_{n}", "name": "grep",
                            "input": "price"}),
        M("tool", "", {"type": "custom_tool_call_output", "call_id": f"ct_{n}",
                       "output": "none"}),
        M("assistant", "", {"role": "assistant", "content": "Nothing."}),
    ]  # fmt: skip


def pydantic_ai(n: str) -> list[M]:
    return [
        M("user", "", {"kind": "request", "parts": [
            {"part_kind": "system-prompt", "content": "You qualify sellers."},
            {"part_kind": "user-prompt", "content": f"sell my house {n}"}]}),
        M("assistant", "", {"kind": "response", "parts": [
            {"part_kind": "thinking", "content": "hmm", "signature": None},
            {"part_kind": "tool-call", "tool_name": "estimate", "args": {"zip": 1},
             "tool_call_id": f"pyd_{n}"}]}),
        M("tool", "", {"kind": "request", "parts": [
            {"part_kind": "tool-return", "tool_name": "estimate", "content": {"value": 450},
             "tool_call_id": f"pyd_{n}"}]}),
        M("assistant", "", {"kind": "response", "parts": [
            {"part_kind": "text", "content": f"450k {n}"}]}),
    ]  # fmt: skip


def claude_transcript(n: str) -> list[M]:
    return [
        M("user", "", {"type": "user", "uuid": f"u1{n}", "message": {
            "role": "user", "content": f"hello {n}"}}),
        M("assistant", "", {"type": "assistant", "uuid": f"u2{n}", "message": {
            "id": "msg_x", "role": "assistant", "content": [
                {"type": "tool_use", "id": f"toolu_c{n}", "name": "Read",
                 "input": {"path": "a"}}]}}),
        M("tool", "", {"type": "user", "uuid": f"u3{n}", "message": {
            "role": "user", "content": [
                {"type": "tool_result", "tool_use_id": f"toolu_c{n}", "content": "ok"}]}}),
        M("assistant", "", {"type": "assistant", "uuid": f"u4{n}", "message": {
            "role": "assistant", "content": [{"type": "text", "text": f"done {n}"}]}}),
        M("assistant", "mirror checkpoint", {"type": "summary", "summary": "…"}),
    ]  # fmt: skip


EXCHANGES: dict[str, Exchange] = {
    f.__name__: f
    for f in (plain, handoff, anthropic_tools, anthropic_media, chat_tools, responses_tools,
              responses_natives, pydantic_ai, claude_transcript)
}  # fmt: skip
PROVIDER_FORMATS = ["anthropic", "openai", "openai-responses"]


def test_sdk_versions_are_recent_enough():
    # the versions the format tests validated against (named in the report)
    assert int(VERSIONS["anthropic"].split(".")[0]) >= 2, VERSIONS
    assert int(VERSIONS["openai"].split(".")[0]) >= 3, VERSIONS


@pytest.mark.parametrize("fmt", PROVIDER_FORMATS)
@pytest.mark.parametrize("name", list(EXCHANGES))
def test_each_exchange_renders_as_the_sdk_accepts(name, fmt):
    history = EXCHANGES[name]("1")
    stored = copy.deepcopy([m.payload for m in history])
    rendered = formats.render(history, fmt)
    CHECKS[fmt](rendered)
    assert [m.payload for m in history] == stored  # rendering changes nothing it read
    again = formats.render(history, fmt)
    assert again == rendered
    assert again is not rendered


def _window(history: list[M], want: int) -> list[M]:
    links = [parts.link(m.role, m.content, m.payload) for m in history]
    return history[windows.window_start(links, want, complete=True) :]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(list(EXCHANGES)), min_size=1, max_size=6),
    st.data(),
)
def test_mixed_histories_in_every_window_render_as_the_sdks_accept(names, data):
    history = [m for i, name in enumerate(names) for m in EXCHANGES[name](str(i))]
    strays = data.draw(st.lists(st.integers(0, len(history)), max_size=4))
    for at in sorted(strays, reverse=True):  # orphans, calls never answered, interruptions
        history.insert(at, data.draw(st.sampled_from([
            M("tool", "", {"type": "function_call_output", "call_id": "lost", "output": "x"}),
            M("tool", "", [{"type": "tool_result", "tool_use_id": "lost", "content": "x"}]),
            M("assistant", "", {"type": "function_call", "call_id": f"never{at}", "name": "f",
                                "arguments": "{}"}),
            M("assistant", "", [{"type": "tool_use", "id": f"toolu_never{at}", "name": "f",
                                 "input": {}}]),
            M("user", "are you there?"),  # may land between a call and its result
            M("agent", "a person writes"),
        ])))  # fmt: skip
    want = data.draw(st.integers(1, len(history)))
    window = _window(history, want)
    for fmt in PROVIDER_FORMATS:
        CHECKS[fmt](formats.render(window, fmt))


# ---- what each format keeps -------------------------------------------------------------------


def test_anthropic_keeps_its_own_blocks_verbatim_and_takes_system_apart():
    history = [M("system", "Be kind."), *anthropic_tools("1"), M("system", "Be brief.")]
    out = formats.render(history, "anthropic")
    assert out["system"] == "Be kind.\n\nBe brief."
    assert out["messages"][0] == {"role": "user", "content": "price of my house? 1"}
    assert out["messages"][1]["content"] == history[2].payload
    assert out["messages"][2]["content"] == history[3].payload["content"]
    assert out["messages"][1]["content"][0]["signature"] == SIGNATURE


def test_anthropic_speaks_for_agents_merges_turns_and_starts_with_a_person():
    history = [
        M("assistant", "Hi! I'm the bot."),
        M("user", "hi"),
        M("user", "anyone?"),
        M("agent", "Jorge here."),
        M("assistant", "And I'm still here."),
    ]
    assert formats.render(history, "anthropic") == {
        "system": None,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "text", "text": "anyone?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Jorge here."},
                                              {"type": "text", "text": "And I'm still here."}]},
        ],
    }  # fmt: skip


def test_openai_converts_other_dialects_and_drops_what_it_cannot_read():
    out = formats.render(anthropic_tools("1"), "openai")
    assert out == [
        {"role": "user", "content": "price of my house? 1"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_a1", "type": "function",
             "function": {"name": "estimate", "arguments": '{"zip":"78701"}'}},
            {"id": "toolu_b1", "type": "function", "function": {"name": "photo",
                                                                "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_a1", "content": "450k"},
        {"role": "tool", "tool_call_id": "toolu_b1", "content": "blurry\n[image]"},
        {"role": "assistant", "content": "About 450k 1."},
    ]  # fmt: skip


def test_openai_returns_its_own_messages_verbatim():
    history = chat_tools("1")
    out = formats.render(history, "openai")
    assert out[1:] == [m.payload for m in history[1:]]


def test_responses_returns_its_own_items_verbatim_in_order():
    history = responses_tools("1")
    assert formats.render(history, "openai-responses") == [m.payload for m in history]


def test_responses_converts_anthropic_tool_use():
    out = formats.render(anthropic_tools("1"), "openai-responses")
    kinds = [item.get("type", item.get("role")) for item in out]
    assert kinds == ["user", "assistant", "function_call", "function_call", "function_call_output",
                     "function_call_output", "assistant"]  # fmt: skip
    assert out[5]["output"][1] == {
        "type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"
    }  # fmt: skip


def test_results_move_to_the_front_of_the_input_after_their_call():
    history = [
        M("user", "q"),
        M("assistant", "", {"type": "function_call", "call_id": "c", "name": "f",
                            "arguments": "{}"}),
        M("user", "are you there?"),
        M("tool", "", {"type": "function_call_output", "call_id": "c", "output": "ok"}),
    ]  # fmt: skip
    assert [m["role"] for m in formats.render(history, "openai")] == [
        "user", "assistant", "tool", "user"
    ]  # fmt: skip
    last = formats.render(history, "anthropic")["messages"][-1]["content"]
    assert [b["type"] for b in last] == ["tool_result", "text"]


def test_plain_is_roles_and_text():
    history = [M("user", "hi"), M("agent", "hello"),
               M("assistant", "", {"type": "function_call", "call_id": "c", "name": "estimate",
                                   "arguments": "{}"})]  # fmt: skip
    assert formats.render(history) == [
        {"role": "user", "content": "hi"},
        {"role": "agent", "content": "hello"},
        {"role": "assistant", "content": "estimate({})"},
    ]


def test_unknown_format_names_the_allowed_ones():
    with pytest.raises(InvalidInput, match="allowed: plain, anthropic, openai, openai-responses"):
        formats.render([], "gemini")


def test_an_empty_window_renders_empty():
    assert formats.render([], "anthropic") == {"system": None, "messages": []}
    assert formats.render([], "openai") == []
    assert formats.render([], "openai-responses") == []
