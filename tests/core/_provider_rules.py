"""Check rendered windows against the real SDK types and the APIs' documented rules.

The types: the ``anthropic`` and ``openai`` packages' request TypedDicts, validated by pydantic
with unknown keys forbidden, and with every lazily validated iterable consumed. The SDKs'
unions also admit their *response* models (which allow any key); a value that only matches
one of those is refused here, since a request must be made of the param types.

The rules (not expressible as types): Anthropic wants user/assistant turns alternating from a
user turn, each ``tool_use`` answered by a ``tool_result`` at the front of the next user turn;
Chat Completions wants an assistant message's ``tool_calls`` answered by ``tool`` messages
right after it; Responses wants every ``function_call_output`` after its ``function_call``,
every call answered, and a reasoning item followed by a model item.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType
from typing import Any

import anthropic
import anthropic.types
import openai
import openai.types.chat
import openai.types.responses
from pydantic import BaseModel, ConfigDict, TypeAdapter
from typing_extensions import is_typeddict

VERSIONS = {"anthropic": anthropic.__version__, "openai": openai.__version__}


def _typeddicts(package: ModuleType) -> set[type]:
    found: set[type] = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found |= {v for v in vars(module).values() if isinstance(v, type) and is_typeddict(v)}
    return found


def _strict_adapters() -> tuple[TypeAdapter[Any], TypeAdapter[Any], TypeAdapter[Any]]:
    classes = set().union(
        *(_typeddicts(p) for p in (anthropic.types, openai.types.chat, openai.types.responses))
    )
    strict = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    for cls in classes:
        cls.__pydantic_config__ = strict  # type: ignore[attr-defined]
    try:  # the schemas are built now; the SDK classes are restored right after
        return (
            TypeAdapter(list[anthropic.types.MessageParam]),
            TypeAdapter(list[openai.types.chat.ChatCompletionMessageParam]),
            TypeAdapter(openai.types.responses.ResponseInputParam),
        )
    finally:
        for cls in classes:
            del cls.__pydantic_config__  # type: ignore[attr-defined]


ANTHROPIC, CHAT, RESPONSES = _strict_adapters()


def _consume(value: Any) -> None:
    """Walk a validated value, running lazy validators, refusing response-model matches."""
    if isinstance(value, BaseModel):
        raise AssertionError(f"only a response model ({type(value).__name__}) accepts {value!r}")
    if isinstance(value, dict):
        for item in value.values():
            _consume(item)
    elif isinstance(value, list | tuple) or hasattr(value, "__next__"):
        for item in value:
            _consume(item)


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def check_anthropic(rendered: dict[str, Any]) -> None:
    """Assert an ``{"system", "messages"}`` value is a valid Messages API request body."""
    assert set(rendered) == {"system", "messages"}
    assert rendered["system"] is None or (isinstance(rendered["system"], str)
                                          and rendered["system"])  # fmt: skip
    messages = rendered["messages"]
    _consume(ANTHROPIC.validate_python(messages))
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        assert message["role"] == ("user" if i % 2 == 0 else "assistant"), messages
        blocks = _blocks(message["content"])
        assert blocks, message
        for block in blocks:
            assert block["type"] != "text" or block["text"], message
        if message["role"] == "user":
            results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
            assert [b["type"] for b in blocks[: len(results)]] == ["tool_result"] * len(results)
            assert set(results) == open_calls, (open_calls, message)
            open_calls = set()
        else:
            assert not open_calls
            open_calls = {b["id"] for b in blocks if b["type"] == "tool_use"}


def check_chat(messages: list[dict[str, Any]]) -> None:
    """Assert a list is valid Chat Completions ``messages``."""
    _consume(CHAT.validate_python(messages))
    open_calls: set[str] = set()
    previous = None
    for message in messages:
        role = message["role"]
        if role == "tool":
            assert message["tool_call_id"] in open_calls, (open_calls, message)
            open_calls.discard(message["tool_call_id"])
        else:
            assert not open_calls, (open_calls, message)
            assert not (role == previous == "assistant"), messages
        if role == "assistant":
            assert message.get("content") or message.get("tool_calls"), message
            open_calls = {c["id"] for c in message.get("tool_calls", ())}
        if role == "user":
            assert message["content"], message
        previous = role


_MODEL_ITEMS = {"function_call", "message", "custom_tool_call", "web_search_call",
                "reasoning", "computer_call", "mcp_call", "mcp_approval_request"}  # fmt: skip


def check_responses(items: list[dict[str, Any]]) -> None:
    """Assert a list is valid Responses ``input``."""
    _consume(RESPONSES.validate_python(items))
    called: set[str] = set()
    answered: set[str] = set()
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind in ("function_call", "custom_tool_call"):
            called.add(item["call_id"])
        if kind in ("function_call_output", "custom_tool_call_output"):
            assert item["call_id"] in called, (called, item)
            answered.add(item["call_id"])
        if kind == "reasoning" and i + 1 < len(items):
            following = items[i + 1]
            assert following.get("type", "message") in _MODEL_ITEMS, items
            assert following.get("role", "assistant") == "assistant", items
        if kind == "message":
            assert item["content"], item
    trailing = set()
    for item in reversed(items):  # calls after the last input may still be running
        if item.get("type") in ("function_call", "custom_tool_call"):
            trailing.add(item["call_id"])
        elif item.get("role") in ("user", "system", "developer") or "output" in item:
            break
    assert called - trailing <= answered, (called, answered)


CHECKS: dict[str, Callable[[Any], None]] = {
    "anthropic": check_anthropic,
    "openai": check_chat,
    "openai-responses": check_responses,
}
