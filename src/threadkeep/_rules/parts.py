"""Message payloads: the JSON check, what an item holds (its parts), its role, its text.

A message may carry a ``payload``: a framework's item or a provider's content blocks, kept
verbatim. This module never changes a payload; it checks that it is JSON that reads back
deep-equal, and reads it to find its parts (text, images, tool calls, tool results and
provider-native pieces such as thinking blocks or reasoning items), so that renderers and
window rules work on one neutral shape. Sans-I/O: no clock, no storage.

Recognised payloads (anything else is opaque: it is kept, and its message is represented by
its ``content`` text):

- Anthropic: a content block, a list of blocks, or a ``MessageParam`` ``{role, content}``;
  also a Claude Agent SDK transcript entry ``{"type": "user"|"assistant", "message": {…}}``.
- OpenAI Chat Completions: a message ``{role, content, tool_calls?, tool_call_id?}``.
- OpenAI Responses: an input item (``message``, ``function_call``, ``function_call_output``,
  ``reasoning``, the other ``*_call`` / ``*_call_output`` items …).
- pydantic-ai: a ``ModelMessage`` (``{"kind": "request"|"response", "parts": […]}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from threadkeep._exceptions import InvalidInput
from threadkeep._rules.validate import MAX_DEPTH

__all__ = [
    "CALLS",
    "FORMATS",
    "RESULT",
    "Dialect",
    "Image",
    "Item",
    "Link",
    "MessageLike",
    "Native",
    "Piece",
    "Side",
    "Text",
    "ToolCall",
    "ToolResult",
    "check_format",
    "dump_payload",
    "link",
    "link_of",
    "parse",
    "role_for",
    "text_of",
]


#: ``link`` bit: the message answers an earlier tool call (a window may not start at it).
RESULT: Final = 1
#: ``link`` bit: the message leaves a tool call open or is a reasoning/thinking step, so the
#: message after it belongs to it (a window may not start right after it).
CALLS: Final = 2


class MessageLike(Protocol):
    """What renderers and token counters read of a message (``threadkeep.Message`` has it)."""

    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def payload(self) -> Any: ...


#: The names ``context(format=…)`` and ``formats.render`` accept.
FORMATS: Final = ("plain", "anthropic", "openai", "openai-responses")

Dialect = Literal["anthropic", "chat", "responses", "pydantic-ai"]
Side = Literal["system", "user", "assistant", "tool"]

_ROLE_SIDE: Final[Mapping[str, Side]] = {
    "user": "user",
    "assistant": "assistant",
    "agent": "assistant",
    "system": "system",
    "tool": "user",  # a tool message without a call id is text the model reads as input
}


def check_format(format: object) -> str:
    """Return ``format`` if it is one of ``FORMATS``.

    Raises:
        InvalidInput: otherwise, naming the allowed ones.
    """
    if format not in FORMATS:
        raise InvalidInput(
            f"unknown format {format!r}; allowed: {', '.join(FORMATS)}", field="format"
        )
    return str(format)


# ---- the JSON check ---------------------------------------------------------------------


def _check_tree(value: object, depth: int) -> None:
    if isinstance(value, str | bool | int | None):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidInput(
                "payload holds NaN or Infinity, which JSON cannot keep", field="payload"
            )
        return
    if depth >= MAX_DEPTH:
        raise InvalidInput(f"payload nests deeper than {MAX_DEPTH} levels", field="payload")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(
                    f"payload object keys must be strings, not {type(key).__name__} ({key!r})",
                    field="payload",
                )
            _check_tree(item, depth + 1)
        return
    if isinstance(value, list):
        for item in value:
            _check_tree(item, depth + 1)
        return
    raise InvalidInput(
        f"payload holds a {type(value).__name__}; only JSON values are kept verbatim "
        "(dict with string keys, list, str, int, float, bool, None)",
        field="payload",
    )


def dump_payload(payload: object, max_bytes: int) -> str | None:
    """Return a payload as compact JSON text (None stays None).

    The text reads back deep-equal to ``payload``: only JSON values are accepted (a tuple,
    a non-string key or a NaN would not come back as it went in).

    Raises:
        InvalidInput: when it is not a JSON object or array, holds a non-JSON value, nests
            deeper than ``MAX_DEPTH``, holds text that is not valid Unicode, or is larger
            than ``max_bytes`` (``Limits.max_payload_bytes``) once encoded.
    """
    if payload is None:
        return None
    if not isinstance(payload, dict | list):
        raise InvalidInput(
            f"payload must be a JSON object or array, not {type(payload).__name__}",
            field="payload",
        )
    _check_tree(payload, 0)
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(
            "payload holds text that is not valid Unicode", field="payload"
        ) from None
    if size > max_bytes:
        raise InvalidInput(
            f"payload is {size} bytes; the limit is {max_bytes} bytes (Limits.max_payload_bytes)",
            field="payload",
        )
    return text


# ---- parts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    """Text."""

    text: str


@dataclass(frozen=True, slots=True)
class Image:
    """An image by URL; inline data is a ``data:<media type>;base64,…`` URL."""

    url: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A request to run a tool; ``arguments`` is JSON text."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool returned for the call ``call_id``."""

    call_id: str
    output: tuple[Text | Image, ...]
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Native:
    """A provider-only piece (thinking, reasoning, server tools …): only its provider reads it.

    ``calls`` / ``answers`` carry the call id it opens or answers, so windows and renderers
    keep such pairs together too.
    """

    calls: str | None = None
    answers: str | None = None


Part = Text | Image | ToolCall | ToolResult | Native


@dataclass(frozen=True, slots=True)
class Piece:
    """One part of a message, the side that speaks it, and where it came from.

    Attributes:
        side: ``system``, ``user``, ``assistant`` or ``tool`` (tool results).
        part: the neutral part.
        dialect: the payload dialect it was read from (None: the message's text).
        raw: the block, part or item it was read from, returned verbatim to its own dialect.
    """

    side: Side
    part: Part
    dialect: Dialect | None = None
    raw: Mapping[str, Any] | None = None

    @property
    def calls(self) -> str | None:
        """The call id this piece opens, if any."""
        if isinstance(self.part, ToolCall):
            return self.part.call_id
        return self.part.calls if isinstance(self.part, Native) else None

    @property
    def answers(self) -> str | None:
        """The call id this piece answers, if any."""
        if isinstance(self.part, ToolResult):
            return self.part.call_id
        return self.part.answers if isinstance(self.part, Native) else None


@dataclass(frozen=True, slots=True)
class Item:
    """A stored message read into parts.

    Attributes:
        role: the stored role.
        dialect: the dialect of the payload as a whole (None: text or opaque payload).
        payload: the payload (None when there is none).
        pieces: its parts, in order.
    """

    role: str
    dialect: Dialect | None
    payload: Any
    pieces: tuple[Piece, ...]


# ---- dialects ---------------------------------------------------------------------------

_ANTHROPIC_BLOCKS: Final = frozenset(
    {
        "text", "image", "document", "search_result", "thinking", "redacted_thinking",
        "tool_use", "tool_result", "server_tool_use", "web_search_tool_result",
        "web_fetch_tool_result", "code_execution_tool_result",
        "bash_code_execution_tool_result", "text_editor_code_execution_tool_result",
        "tool_search_tool_result", "container_upload", "mcp_tool_use", "mcp_tool_result",
        "compaction",
    }
)  # fmt: skip
_CHAT_PARTS: Final = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
_RESPONSES_PARTS: Final = frozenset(
    {"input_text", "input_image", "input_file", "input_audio", "output_text", "refusal"}
)
#: Responses items that answer a call (``call_id``) and so speak on the tool side.
_RESPONSES_RESULTS: Final = frozenset(
    {
        "function_call_output", "computer_call_output", "local_shell_call_output",
        "shell_call_output", "apply_patch_call_output", "custom_tool_call_output",
        "tool_search_output", "program_output", "mcp_approval_response",
    }
)  # fmt: skip
#: Responses items the model produced (assistant side).
_RESPONSES_MODEL: Final = frozenset(
    {
        "function_call", "computer_call", "web_search_call", "file_search_call",
        "code_interpreter_call", "image_generation_call", "local_shell_call", "shell_call",
        "apply_patch_call", "mcp_list_tools", "mcp_approval_request", "mcp_call",
        "custom_tool_call", "tool_search_call", "reasoning", "compaction", "program",
        "item_reference",
    }
)  # fmt: skip
#: Responses items that configure the model rather than speak (system side).
_RESPONSES_SETUP: Final = frozenset(
    {"additional_tools", "configuration_update", "compaction_trigger"}
)
_RESPONSES_ITEMS: Final = (
    _RESPONSES_RESULTS | _RESPONSES_MODEL | _RESPONSES_SETUP | frozenset({"message"})
)
#: Items whose next item belongs to them: open calls, and reasoning before its output.
_RESPONSES_OPENERS: Final = (_RESPONSES_MODEL - {"item_reference", "compaction"}) | {
    "mcp_approval_request"
}


def _types(blocks: Sequence[Any]) -> set[str] | None:
    if not all(isinstance(b, Mapping) and isinstance(b.get("type"), str) for b in blocks):
        return None
    return {b["type"] for b in blocks}


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _data_url(media_type: Any, data: Any) -> str:
    return f"data:{media_type};base64,{data}"


# -- Anthropic --


def _anthropic_output(content: Any) -> tuple[Text | Image, ...]:
    if isinstance(content, str):
        return (Text(content),) if content else ()
    out: list[Text | Image] = []
    for block in content if isinstance(content, list) else ():
        part = _anthropic_part(block) if isinstance(block, Mapping) else None
        if isinstance(part, Text | Image):
            out.append(part)
    return tuple(out)


def _anthropic_part(block: Mapping[str, Any]) -> Part:
    kind = block.get("type")
    if kind == "text":
        return Text(str(block.get("text", "")))
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            return Image(_data_url(source.get("media_type"), source.get("data")))
        if source.get("type") == "url":
            return Image(str(source.get("url")))
    if kind == "tool_use":
        args = _json_text(block.get("input", {}))
        return ToolCall(str(block.get("id")), str(block.get("name")), args)
    if kind == "tool_result":
        return ToolResult(
            str(block.get("tool_use_id")),
            _anthropic_output(block.get("content", "")),
            bool(block.get("is_error", False)),
        )
    if kind in ("server_tool_use", "mcp_tool_use"):
        return Native(calls=str(block.get("id")))
    if isinstance(kind, str) and kind.endswith("_tool_result") and "tool_use_id" in block:
        return Native(answers=str(block["tool_use_id"]))
    return Native()


#: Anthropic blocks only the model writes (server tool results sit in its message too).
_ANTHROPIC_MODEL: Final = frozenset(
    {
        "tool_use", "thinking", "redacted_thinking", "server_tool_use", "mcp_tool_use",
        "mcp_tool_result", "web_search_tool_result", "web_fetch_tool_result",
        "code_execution_tool_result", "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result", "tool_search_tool_result", "compaction",
    }
)  # fmt: skip


def _anthropic(blocks: Sequence[Mapping[str, Any]], side: Side) -> list[Piece]:
    pieces = []
    for block in blocks:
        kind = block.get("type")
        speaker: Side = (
            "tool" if kind == "tool_result" else "assistant" if kind in _ANTHROPIC_MODEL else side
        )
        pieces.append(Piece(speaker, _anthropic_part(block), "anthropic", block))
    return pieces


# -- OpenAI Chat Completions --


def _chat_part(part: Mapping[str, Any]) -> Part:
    kind = part.get("type")
    if kind == "text":
        return Text(str(part.get("text", "")))
    if kind == "image_url":
        url = (part.get("image_url") or {}).get("url")
        return Image(str(url)) if isinstance(url, str) else Native()
    return Native()


def _chat_content(content: Any, side: Side) -> list[Piece]:
    if isinstance(content, str):
        return [Piece(side, Text(content), "chat")] if content else []
    if isinstance(content, list) and _types(content) is not None:
        return [Piece(side, _chat_part(p), "chat", p) for p in content]
    return []


def _chat(message: Mapping[str, Any], side: Side) -> list[Piece]:
    if message.get("role") == "tool":
        result = ToolResult(
            str(message.get("tool_call_id")),
            tuple(p.part for p in _chat_content(message.get("content"), "tool")
                  if isinstance(p.part, Text)),
        )  # fmt: skip
        return [Piece("tool", result, "chat", message)]
    pieces = _chat_content(message.get("content"), side)
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            part: Part = ToolCall(
                str(call.get("id")), str(function.get("name")), str(function.get("arguments"))
            )
        else:
            part = Native(calls=str(call.get("id")) if isinstance(call, Mapping) else None)
        pieces.append(Piece("assistant", part, "chat", call if isinstance(call, Mapping) else None))
    return pieces


# -- OpenAI Responses --


def _responses_output(output: Any) -> tuple[Text | Image, ...]:
    if isinstance(output, str):
        return (Text(output),) if output else ()
    out: list[Text | Image] = []
    for part in output if isinstance(output, list) else ():
        converted = _responses_part(part) if isinstance(part, Mapping) else None
        if isinstance(converted, Text | Image):
            out.append(converted)
    return tuple(out)


def _responses_part(part: Mapping[str, Any]) -> Part:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return Text(str(part.get("text", "")))
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return Image(part["image_url"])
    return Native()


def _responses(item: Mapping[str, Any], side: Side) -> list[Piece]:
    kind = item.get("type", "message")
    if kind == "message":
        content = item.get("content")
        if isinstance(content, str):
            return [Piece(side, Text(content), "responses")] if content else []
        return [
            Piece(side, _responses_part(p), "responses", p)
            for p in (content if isinstance(content, list) else ())
            if isinstance(p, Mapping)
        ]
    call_id = item.get("call_id")
    call_id = str(call_id) if call_id is not None else None
    if kind == "function_call":
        part: Part = ToolCall(str(call_id), str(item.get("name")), str(item.get("arguments")))
        return [Piece("assistant", part, "responses", item)]
    if kind == "function_call_output":
        output = _responses_output(item.get("output"))
        return [Piece("tool", ToolResult(str(call_id), output), "responses", item)]
    if kind == "mcp_approval_request":
        return [Piece("assistant", Native(calls=str(item.get("id"))), "responses", item)]
    if kind == "mcp_approval_response":
        answered = str(item.get("approval_request_id"))
        return [Piece("tool", Native(answers=answered), "responses", item)]
    if kind in _RESPONSES_RESULTS:
        return [Piece("tool", Native(answers=call_id), "responses", item)]
    if kind in _RESPONSES_MODEL:
        return [Piece("assistant", Native(calls=call_id), "responses", item)]
    return [Piece("system", Native(), "responses", item)]


# -- pydantic-ai --


def _pydantic_ai(message: Mapping[str, Any]) -> list[Piece]:
    pieces: list[Piece] = []
    for part in message.get("parts") or ():
        if not isinstance(part, Mapping):
            continue
        kind = part.get("part_kind")
        content = part.get("content")
        if kind == "system-prompt":
            pieces.append(Piece("system", Text(str(content)), "pydantic-ai", part))
        elif kind == "user-prompt":
            text = content if isinstance(content, str) else None
            piece = Text(text) if text is not None else Native()
            pieces.append(Piece("user", piece, "pydantic-ai", part))
        elif kind in ("tool-return", "retry-prompt") and part.get("tool_call_id"):
            result = ToolResult(
                str(part["tool_call_id"]), (Text(_json_text(content)),), kind == "retry-prompt"
            )
            pieces.append(Piece("tool", result, "pydantic-ai", part))
        elif kind == "text":
            pieces.append(Piece("assistant", Text(str(content)), "pydantic-ai", part))
        elif kind == "tool-call":
            call = ToolCall(
                str(part.get("tool_call_id")),
                str(part.get("tool_name")),
                _json_text(part.get("args") or {}),
            )
            pieces.append(Piece("assistant", call, "pydantic-ai", part))
        else:
            side: Side = "assistant" if message.get("kind") == "response" else "user"
            pieces.append(Piece(side, Native(), "pydantic-ai", part))
    return pieces


def _message_role_side(role: Any, default: Side) -> Side:
    if role in ("system", "developer"):
        return "system"
    if role == "assistant":
        return "assistant"
    if role == "user":
        return "user"
    return default


def _read(payload: Any, side: Side) -> tuple[Dialect, list[Piece]] | None:
    """Return the dialect and pieces of a payload, or None when it is opaque."""
    if isinstance(payload, list):
        types = _types(payload)
        if not types:
            return None
        if types <= _ANTHROPIC_BLOCKS:
            return "anthropic", _anthropic(payload, side)
        if types <= _CHAT_PARTS:
            return "chat", _chat_content(payload, side)
        if types <= _RESPONSES_PARTS:
            return "responses", _responses({"content": payload}, side)
        return None
    if not isinstance(payload, Mapping):
        return None
    kind = payload.get("type")
    if kind in _RESPONSES_ITEMS and (kind != "message" or "role" in payload):
        side = _message_role_side(payload.get("role"), side)
        return "responses", _responses(payload, side)
    if kind in _ANTHROPIC_BLOCKS and kind != "text":
        return "anthropic", _anthropic([payload], side)
    if kind in ("user", "assistant") and isinstance(payload.get("message"), Mapping):
        inner = _read(payload["message"], side)  # a Claude Agent SDK transcript entry
        return None if inner is None else ("anthropic", inner[1])
    if payload.get("kind") in ("request", "response") and isinstance(payload.get("parts"), list):
        return "pydantic-ai", _pydantic_ai(payload)
    if "role" not in payload:
        return None
    side = _message_role_side(payload.get("role"), side)
    content = payload.get("content")
    if "tool_calls" in payload or "tool_call_id" in payload or payload.get("role") == "tool":
        return "chat", _chat(payload, side)
    if isinstance(content, list):
        types = _types(content) or set()
        if types <= _ANTHROPIC_BLOCKS and types - {"text"}:
            return "anthropic", _anthropic(content, side)
        if types <= _RESPONSES_PARTS and types:
            return "responses", _responses({"content": content}, side)
        if types <= _CHAT_PARTS:
            return "chat", _chat_content(content, side)
        return None
    if isinstance(content, str):
        return "chat", _chat_content(content, side)  # the same in every dialect
    return None


def parse(role: str, content: str, payload: Any) -> Item:
    """Read a stored message into parts.

    A recognised payload gives the parts; an opaque one (or none) gives the ``content`` text.
    """
    side = _ROLE_SIDE.get(role, "user")
    read = _read(payload, side) if payload is not None else None
    if read is None:
        pieces = (Piece(side, Text(content)),) if content else ()
        return Item(role, None, payload, pieces)
    dialect, found = read
    return Item(role, dialect, payload, tuple(found))


# ---- link bits, roles and text ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    """How a message ties to its neighbours, for window rules.

    Attributes:
        bits: ``RESULT`` and ``CALLS`` (see ``link_of``).
        calls: call ids it opens and does not answer itself.
        answers: call ids it answers that it did not open itself.
        user: whether a person speaks it (role ``user``, not a tool result): turns start there.
    """

    bits: int = 0
    calls: frozenset[str] = frozenset()
    answers: frozenset[str] = frozenset()
    user: bool = False


def link(role: str, content: str, payload: Any) -> Link:
    """Return how a message ties to its neighbours (see ``Link``)."""
    if payload is None:
        return Link(user=role == "user")
    pieces = parse(role, content, payload).pieces
    opened = {p.calls for p in pieces if p.calls is not None}
    answered = {p.answers for p in pieces if p.answers is not None}
    calls, answers = frozenset(opened - answered), frozenset(answered - opened)
    bits = RESULT if answers else 0
    if calls or _opens_next(payload, pieces):
        bits |= CALLS
    return Link(bits, calls, answers, role == "user" and not answers)


def link_of(role: str, content: str, payload: Any) -> int:
    """Return the message's ``link`` bits (``RESULT``, ``CALLS``), stored with it.

    ``RESULT``: it answers a call it does not open itself. ``CALLS``: it opens a call it does
    not answer itself, or is a reasoning/thinking step whose next item belongs to it. A
    window may not start at a ``RESULT`` message, nor right after a ``CALLS`` one. The bits
    are a pure function of the message, so backends store them without deciding anything.
    """
    return link(role, content, payload).bits


def _opens_next(payload: Any, pieces: Sequence[Piece]) -> bool:
    """Return whether the next item belongs to this one (reasoning and thinking steps)."""
    if isinstance(payload, Mapping) and payload.get("type") in _RESPONSES_OPENERS:
        return True
    last = pieces[-1].raw if pieces else None
    return last is not None and last.get("type") in ("thinking", "redacted_thinking")


_SPEAKERS: Final[Mapping[object, str]] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "request": "user",
    "response": "assistant",
}


def _speaker(item: Mapping[str, Any]) -> str | None:
    """Return who an item says speaks it (its role, transcript type or pydantic-ai kind)."""
    if "role" in item:
        return _SPEAKERS.get(item["role"])
    if isinstance(item.get("message"), Mapping):
        return _SPEAKERS.get(item.get("type"))
    return _SPEAKERS.get(item.get("kind"))


def role_for(item: Any) -> str:
    """Return the threadkeep role to store a framework item or provider message under.

    The mapping, first match wins: anything holding a tool call, a model-only block or item
    (``function_call``, ``reasoning``, the other ``*_call`` items, ``compaction``,
    Anthropic ``tool_use`` / ``thinking`` / server tool blocks, a pydantic-ai response) →
    ``assistant``; anything answering a call (OpenAI ``*_call_output`` items and
    ``mcp_approval_response``, a Chat ``tool`` message, Anthropic ``tool_result`` blocks, a
    pydantic-ai request with tool returns) → ``tool``; otherwise the item's own speaker
    (``developer`` → ``system``; a pydantic-ai request → ``user``); Responses
    ``additional_tools`` / ``configuration_update`` / ``compaction_trigger`` → ``system``.

    Raises:
        InvalidInput: when the item does not say who speaks (for example a bare list of
            text blocks); pass the role yourself then.
    """
    read = _read(item, "user")
    sides = {p.side for p in read[1]} if read is not None else set()
    speaker = _speaker(item) if isinstance(item, Mapping) else None
    if "assistant" in sides:
        return "assistant"
    if "tool" in sides:
        return "tool"
    if speaker is not None:
        return speaker
    if sides == {"system"} and isinstance(item, Mapping):
        return "system"
    raise InvalidInput(
        "cannot tell who speaks this item; pass its role (user, assistant, agent, system or tool)",
        field="role",
    )


def text_of(role: str, content: str, payload: Any) -> str:
    """Return a message's readable text: its content, or one derived from its payload.

    Tool calls read as ``name(arguments)``, tool results as their text, images as
    ``[image]``; provider-only pieces (thinking, reasoning) are left out.
    """
    if content or payload is None:
        return content
    texts = []
    for piece in parse(role, content, payload).pieces:
        part = piece.part
        if isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, Image):
            texts.append("[image]")
        elif isinstance(part, ToolCall):
            texts.append(f"{part.name}({part.arguments})")
        elif isinstance(part, ToolResult):
            texts.extend("[image]" if isinstance(o, Image) else o.text for o in part.output)
    return "\n".join(t for t in texts if t)
