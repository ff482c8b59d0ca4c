"""A conversation's messages in the form each provider's SDK accepts as-is.

``Store.context(id, format=…)`` uses these; they are pure functions, also usable on messages
read with ``Store.messages``::

    from threadkeep import formats
    request = formats.render(store.messages(conv.id, last=20), "anthropic")
    client.messages.create(model=…, max_tokens=…, system=request["system"] or NOT_GIVEN,
                           messages=request["messages"])

Formats:

- ``"plain"``: ``[{"role", "content"}]`` with threadkeep's roles and each message's text.
- ``"anthropic"``: ``{"system": str | None, "messages": [MessageParam …]}``.
- ``"openai"``: Chat Completions ``[ChatCompletionMessageParam …]``.
- ``"openai-responses"``: Responses ``[ResponseInputItemParam …]``.

Stored payloads are returned verbatim to their own format (thinking signatures, reasoning
items, ids); other formats get the convertible parts (text, images, tool calls and results).
No SDK is imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from threadkeep._rules import parts
from threadkeep._rules.parts import FORMATS, MessageLike, check_format, role_for
from threadkeep.formats.anthropic import render_anthropic
from threadkeep.formats.openai import render_chat, render_responses

__all__ = ["FORMATS", "MessageLike", "check_format", "render", "role_for", "text_of"]


def text_of(message: MessageLike) -> str:
    """Return a message's readable text: its content, or text derived from its payload.

    Tool calls read as ``name(arguments)``, tool results as their output, images as
    ``[image]``; thinking and reasoning are left out.
    """
    return parts.text_of(message.role, message.content, message.payload)


def render(messages: Iterable[MessageLike], format: str = "plain") -> Any:
    """Return messages (oldest first) in a provider's form.

    Args:
        messages: the messages, oldest first (a window: see ``Store.context``).
        format: one of ``FORMATS``.

    Returns:
        A list of dicts, or for ``"anthropic"`` a dict with ``system`` and ``messages``.

    Raises:
        InvalidInput: an unknown format.
    """
    check_format(format)
    messages = list(messages)
    if format == "plain":
        return [
            {"role": m.role, "content": m.content if m.content or m.payload is None else text_of(m)}
            for m in messages
        ]
    items = [parts.parse(m.role, m.content, m.payload) for m in messages]
    if format == "anthropic":
        return render_anthropic(items)
    return render_chat(items) if format == "openai" else render_responses(items)
