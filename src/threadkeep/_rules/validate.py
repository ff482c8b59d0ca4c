"""Input checks, run before any write; each failure is InvalidInput naming what is allowed.

Bounds every backend can hold, so they all give the same answer:

- integers (seqs, versions, cursors) are at most ``MAX_INT`` = 2**63 - 1, what SQLite and
  PostgreSQL store (a larger ``after`` is refused; a smaller one past the end reads nothing);
- JSON values (metadata, fact values, states) nest at most ``MAX_DEPTH`` levels, hold no NaN
  or infinity, and no lone surrogate (text that is not Unicode);
- durations are finite.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Final

from threadkeep._config import Limits
from threadkeep._exceptions import InvalidInput

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_LEASE",
    "ROLES",
    "check_content",
    "check_depth",
    "check_lease",
    "check_limit",
    "check_name",
    "check_non_negative",
    "check_role",
    "check_timeout",
    "dump_json",
    "dump_metadata",
]

ROLES: Final = ("user", "assistant", "agent", "system", "tool")

#: The largest integer a seq, version or cursor may be: a signed 64-bit integer.
MAX_INT: Final = 2**63 - 1

#: How deep JSON values may nest (objects and arrays): deeper ones are refused, so that every
#: stored value can be read back and served (pydantic stops serializing at 255 levels).
MAX_DEPTH: Final = 64

#: The longest turn lease.
MAX_LEASE: Final = timedelta(days=365)


def check_role(role: object) -> str:
    """Return ``role`` if it is a known message role.

    Raises:
        InvalidInput: for any other value.
    """
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; allowed: {', '.join(ROLES)}", field="role")
    return str(role)


def check_content(content: object, limits: Limits) -> str:
    """Return ``content`` (a plain str) if it is non-blank text within the content limit.

    Raises:
        InvalidInput: when it is not a string, is empty or blank, is not Unicode (a lone
            surrogate) or is too large.
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
    return content if type(content) is str else str.__str__(content)  # a plain str, stored as is


def check_name(value: object, field: str, *, optional: bool = False, max_len: int = 256) -> Any:
    """Return a tenant, contact, agent, channel, stage or key name (a plain str) if acceptable.

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
    return value if type(value) is str else str.__str__(value)  # a plain str, stored as is


def check_depth(value: object, field: str) -> None:
    """Refuse a JSON value nesting deeper than ``MAX_DEPTH`` (without recursion).

    Raises:
        InvalidInput: when it does.
    """
    level = _containers([value])
    for _ in range(MAX_DEPTH):
        if not level:
            return
        level = _containers(
            inner for item in level for inner in (item.values() if isinstance(item, dict) else item)
        )
    if level:
        raise InvalidInput(f"{field} nests deeper than {MAX_DEPTH} levels", field=field)


def _containers(items: Iterable[object]) -> list[dict[Any, Any] | list[Any] | tuple[Any, ...]]:
    return [item for item in items if isinstance(item, dict | list | tuple)]


def dump_json(value: Any, field: str, max_bytes: int) -> str:
    """Return ``value`` as compact JSON text.

    Raises:
        InvalidInput: when it is not JSON (NaN, infinity and lone surrogates included), nests
            deeper than ``MAX_DEPTH`` or is over ``max_bytes``.
    """
    if isinstance(value, dict | list | tuple):
        check_depth(value, field)
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{field} holds text that is not Unicode", field=field) from None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{field} is not JSON: {exc}", field=field) from None
    if size > max_bytes:
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


def check_non_negative(value: object, field: str) -> int:
    """Return a seq, version or cursor: an int from 0 to ``MAX_INT``.

    Raises:
        InvalidInput: otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise InvalidInput(
            f"{field} must be an integer from 0 to {MAX_INT}, not {value!r}", field=field
        )
    return value


def check_timeout(value: object, field: str = "timeout") -> float | None:
    """Return a wait in seconds: a finite number >= 0, or None (no end).

    Raises:
        InvalidInput: otherwise (NaN and infinity included: pass None to wait forever).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise InvalidInput(
            f"{field} must be zero or more seconds, or None, not {value!r}", field=field
        )
    return float(value)


def check_lease(value: object) -> int:
    """Return a turn lease (seconds or a timedelta) in microseconds.

    Raises:
        InvalidInput: unless it is a positive, finite duration of at most ``MAX_LEASE``.
    """
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds <= MAX_LEASE.total_seconds()
    ):
        raise InvalidInput(
            f"lease must be a positive number of seconds, at most {MAX_LEASE.days} days, "
            f"not {value!r}",
            field="lease",
        )
    return max(1, int(seconds * 1_000_000))
