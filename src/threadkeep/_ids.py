"""Conversation ids: time-sortable, URL-safe, unique without coordination."""

from __future__ import annotations

import os
import re

from threadkeep._exceptions import InvalidInput

__all__ = ["check_id", "new_id"]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
#: Every pair of digits, by the 10 bits they spell: an id is 13 lookups, not 26 divisions.
_PAIRS = tuple(high + low for high in _ALPHABET for low in _ALPHABET)
#: Where each pair's 10 bits start, the highest first (the top pair's two high bits are 0).
_SHIFTS = tuple(range(120, -1, -10))
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_id(now_us: int) -> str:
    """Return a new 26-character id: 48 bits of milliseconds, then 80 random bits (ULID layout).

    ``now_us`` is the store's clock: ids made later sort after ids made earlier (to the
    millisecond), and they are safe in URLs.
    """
    value = (now_us // 1000) % (1 << 48) << 80 | int.from_bytes(os.urandom(10), "big")
    pairs = _PAIRS
    return "".join([pairs[value >> shift & 1023] for shift in _SHIFTS])


def check_id(value: object, field: str = "conversation_id") -> str:
    """Return ``value`` if it is a well-formed id, else raise InvalidInput.

    Raises:
        InvalidInput: when the id is not 1-64 characters of letters, digits, ``_`` or ``-``.
    """
    # an id made here is 26 ASCII letters and digits: checked without the regex (a match
    # costs about five times these three tests); anything else gets the regex's answer
    if type(value) is str and len(value) <= 64 and value.isascii() and value.isalnum():
        return value
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidInput(
            f"{field} {value!r} is malformed: an id is 1-64 characters of letters, digits, "
            "'_' or '-'",
            field=field,
        )
    return value
