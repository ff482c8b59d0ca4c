"""The Anthropic Messages API form: ``{"system": str | None, "messages": [MessageParam …]}``.

System messages go to ``system``; ``agent`` speaks as ``assistant``; tool results are
``tool_result`` blocks at the front of the next user message; consecutive messages of one
role are merged; the list starts with a person's message, as the API requires. Blocks that
came from Anthropic (thinking with its signature, tool_use with its caller, citations, cache
control …) are returned unchanged and in order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from threadkeep._rules.parts import Image, Item, Piece, Text, ToolCall, ToolResult
from threadkeep.formats._common import prepare, verbatim

__all__ = ["render_anthropic"]


def _image(image: Image) -> dict[str, Any]:
    head, sep, data = image.url.partition(";base64,")
    if image.url.startswith("data:") and sep:
        source = {"type": "base64", "media_type": head[len("data:") :], "data": data}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": image.url}}


def _input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"arguments": arguments}


def _block(piece: Piece) -> dict[str, Any]:
    part = piece.part
    if piece.dialect == "anthropic" and piece.raw is not None:
        return verbatim(piece.raw)
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, Image):
        return _image(part)
    if isinstance(part, ToolCall):
        return {"type": "tool_use", "id": part.call_id, "name": part.name,
                "input": _input(part.arguments)}  # fmt: skip
    assert isinstance(part, ToolResult), part  # Native pieces came from Anthropic: verbatim
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.call_id}
    output = [_block(Piece("tool", o)) for o in part.output]
    if len(output) == 1 and output[0]["type"] == "text":
        block["content"] = output[0]["text"]
    elif output:
        block["content"] = output
    if part.is_error:
        block["is_error"] = True
    return block


def render_anthropic(items: Sequence[Item]) -> dict[str, Any]:
    """Return the window as Anthropic's ``system`` and ``messages``."""
    units = prepare(items, "anthropic", user_first=True)
    system = [
        u.piece.part.text
        for u in units
        if u.piece.side == "system" and isinstance(u.piece.part, Text)
    ]
    messages: list[dict[str, Any]] = []
    plain: list[bool] = []  # whether the message is one text that came as a plain string
    for unit in units:
        piece = unit.piece
        if piece.side == "system":
            continue
        role = "assistant" if piece.side == "assistant" else "user"
        block = _block(piece)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].append(block)
            plain[-1] = False
        else:
            messages.append({"role": role, "content": [block]})
            plain.append(isinstance(piece.part, Text) and piece.raw is None)
    for message, is_plain in zip(messages, plain, strict=True):
        if is_plain:
            message["content"] = message["content"][0]["text"]
    return {"system": "\n\n".join(system) if system else None, "messages": messages}
