"""Input checks, run before any write; each failure is InvalidInput naming what is allowed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from threadkeep._config import Limits
from threadkeep._exceptions import InvalidInput

__all__ = [
    "ROLES",
    "check_content",
    "check_limit",
    "check_name",
    "check_role",
    "check_seq",
    "dump_json",
    "dump_metadata",
]

ROLES: Final = ("user", "assistant", "agent", "system", "tool")


def check_role(role: object) -> str:
    """Return ``role`` if it is a known message role.

    Raises:
        InvalidInput: for any other value.
    """
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; allowed: {', '.join(ROLES)}", field="role")
    return str(role)


def check_content(content: object, limits: Limits) -> str:
    """Return ``content`` if it is non-blank text within ``limits.max_content_bytes``.

    Raises:
        InvalidInput: when it is not a string, is empty or blank, or is too large.
    """
    if not isinstance(content, str):
        raise InvalidInput(f"content must be text, not {type(content).__name__}", field="content")
    if not content.strip():
        raise InvalidInput("content is empty; a message needs some text", field="content")
    size = len(content.encode("utf-8", "surrogatepass"))
    if size > limits.max_content_bytes:
        raise InvalidInput(
            f"content is {size} bytes; the limit is {limits.max_content_bytes} bytes "
            "(Limits.max_content_bytes)",
            field="content",
        )
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("content is not valid Unicode text", field="content") from None
    return content


def check_name(value: object, field: str, *, optional: bool = False, max_len: int = 256) -> Any:
    """Return a tenant, contact, agent, channel, stage or key name if it is acceptable.

    Raises:
        InvalidInput: when it is not a non-empty string of at most ``max_len`` printable
            characters (or None, when ``optional``).
    """
    if value is None and optional:
        return None
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > max_len
        or not value.isprintable()
    ):
        raise InvalidInput(
            f"{field} {value!r} is not acceptable: it must be 1-{max_len} printable characters",
            field=field,
        )
    return value


def dump_json(value: Any, field: str, max_bytes: int) -> str:
    """Return ``value`` as compact JSON text.

    Raises:
        InvalidInput: when it is not JSON-serializable (NaN included) or is over ``max_bytes``.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{field} is not JSON: {exc}", field=field) from None
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidInput(f"{field} is over the limit of {max_bytes} bytes", field=field)
    return text


def dump_metadata(metadata: object, limits: Limits) -> str:
    """Return metadata (a JSON object with string keys, or None for {}) as JSON text.

    Raises:
        InvalidInput: when it is not a mapping with string keys, not JSON, or too large.
    """
    if metadata is None:
        return "{}"
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidInput(
            "metadata must be a JSON object (a dict with string keys)", field="metadata"
        )
    return dump_json(dict(metadata), "metadata", limits.max_metadata_bytes)


def check_limit(value: object, field: str, limits: Limits, *, minimum: int = 1) -> int:
    """Return a page size or count if it is an int within [minimum, limits.max_page].

    Raises:
        InvalidInput: otherwise.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not minimum <= value <= limits.max_page
    ):
        raise InvalidInput(
            f"{field} must be an integer from {minimum} to {limits.max_page}, not {value!r}",
            field=field,
        )
    return value


def check_seq(value: object, field: str) -> int:
    """Return a message seq (an int >= 0).

    Raises:
        InvalidInput: otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{field} must be a non-negative integer, not {value!r}", field=field)
    return value
