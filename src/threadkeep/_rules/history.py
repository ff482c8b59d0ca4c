"""New messages checked before any write, and where ``max_messages`` trimming may cut.

Sans-I/O. ``check_message`` and ``check_items`` turn the Store's arguments into
``NewMessage`` values (each check failing with ``InvalidInput`` naming the item), so a batch
is refused whole before the backend sees it. ``trim_start`` is the trimming rule the memory
backend runs and the SQL and Lua backends encode: keep whole exchanges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from threadkeep._config import Limits
from threadkeep._exceptions import InvalidInput
from threadkeep._rules import validate
from threadkeep._rules.parts import CALLS, RESULT, dump_payload, link_of
from threadkeep._rules.rows import NewMessage

__all__ = ["ITEM_OPTIONS", "check_items", "check_message", "trim_start"]

#: What the options of an ``append_many`` / ``replace_messages`` item may hold.
ITEM_OPTIONS: Final = ("payload", "metadata", "idempotency_key")


def _content(content: object, limits: Limits, *, with_payload: bool) -> str:
    if with_payload and isinstance(content, str) and not content.strip():
        return content  # the payload carries the message; blank text is within every limit
    return validate.check_content(content, limits)


def check_message(
    role: object,
    content: object,
    *,
    payload: object,
    metadata: object,
    idempotency_key: object,
    limits: Limits,
) -> NewMessage:
    """Return a message to store, checked; ``content`` may be blank when a payload is given.

    Raises:
        InvalidInput: a bad role, content, payload, metadata or key.
    """
    checked_role = validate.check_role(role)
    payload_json = dump_payload(payload, limits.max_payload_bytes)
    text = _content(content, limits, with_payload=payload_json is not None)
    return NewMessage(
        role=checked_role,
        content=text,
        payload_json=payload_json,
        metadata_json=validate.dump_metadata(metadata, limits),
        idempotency_key=validate.check_name(idempotency_key, "idempotency_key", optional=True),
        link=link_of(checked_role, text, payload),
    )


def _item(item: object, limits: Limits) -> NewMessage:
    if not isinstance(item, tuple | list) or len(item) not in (2, 3):
        raise InvalidInput("must be (role, content) or (role, content, options)", field="items")
    options = item[2] if len(item) == 3 else {}
    if not isinstance(options, Mapping):
        raise InvalidInput("options must be a dict", field="items")
    unknown = sorted(str(k) for k in options if k not in ITEM_OPTIONS)
    if unknown:
        raise InvalidInput(
            f"unknown option {', '.join(unknown)}; allowed: {', '.join(ITEM_OPTIONS)}",
            field="items",
        )
    return check_message(
        item[0],
        item[1],
        payload=options.get("payload"),
        metadata=options.get("metadata"),
        idempotency_key=options.get("idempotency_key"),
        limits=limits,
    )


def check_items(items: object, limits: Limits, *, distinct_keys: bool) -> tuple[NewMessage, ...]:
    """Return the messages of a batch, checked, in order.

    Args:
        items: ``(role, content)`` or ``(role, content, options)`` tuples; options may hold
            ``payload``, ``metadata`` and ``idempotency_key``.
        limits: the store's limits (``max_batch`` items at most).
        distinct_keys: refuse two items with the same key (a new history); otherwise a
            repeated key replays the earlier item, as appending one by one would.

    Raises:
        InvalidInput: naming the first bad item (``item 3: unknown role …``).
    """
    items = _listed(items)
    if len(items) > limits.max_batch:
        raise InvalidInput(
            f"a batch holds at most {limits.max_batch} items (Limits.max_batch), not {len(items)}",
            field="items",
        )
    checked = []
    keys: set[str] = set()
    for n, item in enumerate(items):
        try:
            message = _item(item, limits)
        except InvalidInput as exc:
            raise InvalidInput(f"item {n}: {exc}", field=exc.field) from None
        key = message.idempotency_key
        if distinct_keys and key is not None and key in keys:
            raise InvalidInput(
                f"item {n}: idempotency key {key!r} is used twice", field="idempotency_key"
            )
        if key is not None:
            keys.add(key)
        checked.append(message)
    return tuple(checked)


def _listed(items: object) -> list[Any]:
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
        raise InvalidInput("items must be a list of (role, content[, options])", field="items")
    return list(items)


def trim_start(links: Sequence[int], first: int) -> int | None:
    """Return the index of the oldest message ``max_messages`` trimming keeps.

    Args:
        links: the ``link`` bits of the kept messages, oldest first.
        first: the index the count alone would keep from.

    Returns:
        The first index at or after ``first`` whose message is not a result and does not
        follow a message leaving a call open; None when there is none (one exchange longer
        than ``max_messages``: it is kept whole until it ends).
    """
    for i in range(max(first, 0), len(links)):
        if not links[i] & RESULT and not (i and links[i - 1] & CALLS):
            return i
    return None
