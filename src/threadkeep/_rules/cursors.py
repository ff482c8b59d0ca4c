"""Cursors: the opaque keyset cursor of list pages, and event cursors.

A page cursor is base64url of ``[activity_us, id]``; an event cursor is the decimal event
number (Redis writes it ``"12-0"``, its stream id; both forms are accepted everywhere).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Final

from threadkeep._exceptions import InvalidInput
from threadkeep._ids import check_id
from threadkeep._rules.rows import ConversationRow
from threadkeep._rules.validate import MAX_INT

__all__ = ["decode_page", "encode_page", "parse_event"]

#: Longer than any cursor encode_page makes (an id is at most 64 characters).
_MAX_PAGE_CURSOR: Final = 200
_EVENT: Final = re.compile(r"[0-9]{1,19}(?:-0)?")


def encode_page(row: ConversationRow) -> str:
    """Return the opaque keyset cursor that continues after ``row``."""
    raw = json.dumps([row.activity_us, row.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page(cursor: object) -> tuple[int, str]:
    """Return the (activity_us, id) keyset position of a page cursor.

    Raises:
        InvalidInput: when the cursor was not made by ``encode_page``.
    """
    try:
        if not isinstance(cursor, str) or len(cursor) > _MAX_PAGE_CURSOR:
            raise ValueError(cursor)
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        activity, conv_id = json.loads(raw)
        if type(activity) is not int or not 0 <= activity <= MAX_INT:
            raise ValueError(cursor)
        check_id(conv_id)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise InvalidInput(
            f"cursor {cursor!r} is malformed; pass the next_cursor of a previous page",
            field="cursor",
        ) from None
    return activity, conv_id


def parse_event(after: object) -> int | None:
    """Return the event number of a cursor, ``"12"`` or ``"12-0"`` (None stays None).

    Raises:
        InvalidInput: when it is neither, or its number is over ``MAX_INT``.
    """
    if after is None:
        return None
    if not isinstance(after, str) or _EVENT.fullmatch(after) is None:
        raise InvalidInput(
            f"events cursor {after!r} is malformed: pass the id of an event", field="after"
        )
    number = int(after.partition("-")[0])
    if number > MAX_INT:
        raise InvalidInput(f"events cursor {after!r} is past any event", field="after")
    return number
