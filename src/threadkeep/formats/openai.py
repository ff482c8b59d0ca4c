"""The OpenAI forms: Chat Completions messages and Responses input items.

Chat Completions (``"openai"``): ``system`` messages stay in place, ``agent`` speaks as
``assistant``, consecutive model turns merge into one assistant message (text and
``tool_calls``), and each tool result is a ``tool`` message right after it. Responses
(``"openai-responses"``): a flat list of input items (messages, ``function_call``,
``function_call_output``, and Responses' own items such as ``reasoning`` unchanged).
Messages stored in the target's own form come back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from threadkeep._rules.parts import Image, Item, Piece, Side, Text, ToolCall, ToolResult
from threadkeep.formats._common import Unit, content_piece, intact, prepare, verbatim

__all__ = ["render_chat", "render_responses"]

_ROLE: dict[Side, str] = {"system": "system", "user": "user", "assistant": "assistant"}


def _groups(units: Sequence[Unit], together: Callable[[Unit, Unit], bool]) -> list[list[Unit]]:
    groups: list[list[Unit]] = []
    for unit in units:
        if groups and together(groups[-1][-1], unit):
            groups[-1].append(unit)
        else:
            groups.append([unit])
    return groups


def _texts(group: Sequence[Unit]) -> list[str]:
    return [u.piece.part.text for u in group if isinstance(u.piece.part, Text)]


def _plain(group: Sequence[Unit]) -> bool:
    return len(group) == 1 and isinstance(group[0].piece.part, Text) and group[0].piece.raw is None


def _output_text(result: ToolResult) -> str:
    return "\n".join(o.text if isinstance(o, Text) else "[image]" for o in result.output)


# ---- Chat Completions -------------------------------------------------------------------


def _chat_part(piece: Piece) -> dict[str, Any]:
    if piece.dialect == "chat" and piece.raw is not None:
        return verbatim(piece.raw)
    if isinstance(piece.part, Image):
        return {"type": "image_url", "image_url": {"url": piece.part.url}}
    assert isinstance(piece.part, Text), piece
    return {"type": "text", "text": piece.part.text}


def _chat_call(piece: Piece) -> dict[str, Any]:
    if piece.dialect == "chat" and piece.raw is not None:
        return verbatim(piece.raw)
    call = piece.part
    assert isinstance(call, ToolCall), piece
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.call_id, "type": "function", "function": function}


def _chat_message(items: Sequence[Item], group: list[Unit]) -> dict[str, Any]:
    stored = intact(items, group, "chat")
    if stored is not None:
        return stored
    side = group[0].piece.side
    if side == "tool":
        result = group[0].piece.part
        assert isinstance(result, ToolResult), result
        return {"role": "tool", "tool_call_id": result.call_id, "content": _output_text(result)}
    if side == "assistant":
        texts = _texts(group)
        calls = [_chat_call(u.piece) for u in group if u.piece.calls is not None]
        content: Any = (
            texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts] or None
        )
        message = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        return message
    if side == "system" or _plain(group):
        return {"role": _ROLE[side], "content": "\n\n".join(_texts(group))}
    return {"role": "user", "content": [_chat_part(u.piece) for u in group]}


def render_chat(items: Sequence[Item]) -> list[dict[str, Any]]:
    """Return the window as Chat Completions messages."""
    units = prepare(items, "chat")

    def together(a: Unit, b: Unit) -> bool:
        if a.piece.side == b.piece.side == "assistant":
            return True  # one assistant message per model turn: its text and all its calls
        return a.item == b.item and a.piece.side == b.piece.side != "tool"

    return [_chat_message(items, group) for group in _groups(units, together)]


# ---- Responses --------------------------------------------------------------------------


def _responses_part(piece: Piece) -> dict[str, Any]:
    if piece.dialect == "responses" and piece.raw is not None:
        return verbatim(piece.raw)
    if isinstance(piece.part, Image):
        return {"type": "input_image", "image_url": piece.part.url, "detail": "auto"}
    assert isinstance(piece.part, Text), piece
    return {"type": "input_text", "text": piece.part.text}


def _responses_item(items: Sequence[Item], group: list[Unit]) -> dict[str, Any]:
    stored = intact(items, group, "responses")
    if stored is not None:
        return stored
    piece = group[0].piece
    part = piece.part
    if isinstance(part, ToolCall):
        return {"type": "function_call", "call_id": part.call_id, "name": part.name,
                "arguments": part.arguments}  # fmt: skip
    if isinstance(part, ToolResult):
        output: Any = _output_text(part)
        if any(isinstance(o, Image) for o in part.output):
            output = [_responses_part(Piece("tool", o)) for o in part.output]
        return {"type": "function_call_output", "call_id": part.call_id, "output": output}
    if piece.side != "user" or _plain(group):
        return {"role": _ROLE[piece.side], "content": "\n\n".join(_texts(group))}
    return {"role": "user", "content": [_responses_part(u.piece) for u in group]}


def render_responses(items: Sequence[Item]) -> list[dict[str, Any]]:
    """Return the window as Responses API input items."""
    units = prepare(items, "responses")

    def together(a: Unit, b: Unit) -> bool:
        return (
            a.item == b.item
            and a.piece.side == b.piece.side
            and content_piece(items, a)
            and content_piece(items, b)
        )

    return [_responses_item(items, group) for group in _groups(units, together)]
