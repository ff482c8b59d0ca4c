"""Argument encoding and reply decoding shared by the sync and async drivers.

Rows live in Redis as hashes of short fields (``FIELDS`` is their legend) holding decimal or
text values; messages as ``"seq body"`` strings whose body holds role, time, key, metadata and
content on lines (``encode_message``); optional script arguments are ``""`` for None and
``"+value"`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from threadkeep._rules.builders import fast_builder
from threadkeep._rules.events import data_json
from threadkeep._rules.retention import RetentionUs
from threadkeep._rules.rows import ConversationRow, EventRow, FactRow, MessageRow, NewMessage

__all__ = [
    "FIELDS",
    "decode_event",
    "decode_fact",
    "decode_conversation",
    "decode_message",
    "encode_conversation",
    "encode_fact",
    "encode_message",
    "encode_new",
    "json_text",
    "opt",
    "pairs",
]


def opt(value: object) -> str:
    """Return an optional script argument: "" for None, else "+" and the value."""
    return "" if value is None else f"+{value}"


#: The legend of the conversation hash (``Keys.conversation``): field → what it holds. Short
#: names, as there is one hash per conversation. Times are µs since the epoch, in decimal; a
#: field of a None value is left out. Only the scripts write ``lt``/``lu``/``lk``, ``stk``
#: and ``ix``.
FIELDS: Final = MappingProxyType(
    {
        "id": "conversation id",
        "tn": "tenant",
        "ct": "contact id",
        "ag": "agent id",
        "ch": "channel",
        "st": "status",
        "sg": "stage",
        "md": "metadata JSON",
        "cr": "created at",
        "act": "last activity at",
        "exp": "expires at (absent: never)",
        "idl": "idle at",
        "cnt": "messages kept",
        "seq": "last seq",
        "sv": "state version",
        "ttl": "retention: time to live (absent: none)",
        "ia": "retention: idle after",
        "win": "retention: window",
        "max": "retention: max messages (absent: no bound)",
        "lt": "turn lease token (fencing)",
        "lu": "turn lease until",
        "lk": "call token of the last lease taken (a resent acquire gets its own lease)",
        "stk": "call token of the last state save (a resent save gets its own version)",
        "ix": "until when its indexes last, for which status and stage (_lib.lua index_mark)",
    }
)


def encode_conversation(row: ConversationRow) -> list[str]:
    """Return a conversation row as hash field, value pairs (None fields left out)."""
    retention = row.retention
    out = ["id", row.id, "tn", row.tenant, "ct", row.contact_id]
    if row.agent_id is not None:
        out += ("ag", row.agent_id)
    if row.channel is not None:
        out += ("ch", row.channel)
    out += ("st", row.status)
    if row.stage is not None:
        out += ("sg", row.stage)
    out += ("md", row.metadata_json, "cr", str(row.created_us), "act", str(row.activity_us))
    if row.expires_us is not None:
        out += ("exp", str(row.expires_us))
    out += (
        "idl", str(row.idle_us), "cnt", str(row.message_count), "seq", str(row.last_seq),
        "sv", str(row.state_version),
    )  # fmt: skip
    if retention.ttl_us is not None:
        out += ("ttl", str(retention.ttl_us))
    out += ("ia", str(retention.idle_after_us), "win", str(retention.window))
    if retention.max_messages is not None:
        out += ("max", str(retention.max_messages))
    return out


def pairs(flat: Sequence[Any]) -> dict[str, str]:
    """Return a flat [field, value, …] reply as a dict."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


# A list page decodes up to 50 rows, a create one: each built by its fast_builder (the
# keyword constructor of a frozen dataclass sets each field through object.__setattr__).
_conversation_row: Callable[..., ConversationRow] = fast_builder(ConversationRow)
_retention_us: Callable[..., RetentionUs] = fast_builder(RetentionUs)


def decode_conversation(fields: Mapping[str, str] | Sequence[Any]) -> ConversationRow:
    """Return the conversation row of a hash (a mapping or a flat field, value list)."""
    f = fields if isinstance(fields, Mapping) else pairs(fields)
    get = f.get
    expires, ttl, most = get("exp"), get("ttl"), get("max")
    # fmt: off
    return _conversation_row(
        f["id"], f["tn"], f["ct"], get("ag"), get("ch"), f["st"], get("sg"), f["md"],
        int(f["cr"]), int(f["act"]), None if expires is None else int(expires), int(f["idl"]),
        int(f["cnt"]), int(f["seq"]), int(f["sv"]),
        _retention_us(
            None if ttl is None else int(ttl), int(f["ia"]), int(f["win"]),
            None if most is None else int(most),
        ),
    )
    # fmt: on


def encode_message(
    role: str,
    content: str,
    created_us: int,
    metadata_json: str,
    key: str | None,
    payload_json: str | None = None,
    link: int = 0,
) -> str:
    """Return a message body; the script prefixes it with its seq and a space.

    Lines: role, ``created_us:link``, optional key, metadata JSON, optional payload JSON, then
    the content (which may hold newlines of its own: it comes last). Only the content can
    hold a newline: roles and keys are printable names and compact JSON escapes newlines.
    Bodies written before payloads existed have ``created_us`` alone on the second line and
    no payload line; ``decode_message`` reads both, and the scripts read ``link`` as 0 there.
    """
    return (
        f"{role}\n{created_us}:{link}\n{opt(key)}\n{metadata_json}\n{opt(payload_json)}\n{content}"
    )


def encode_new(item: NewMessage, created_us: int) -> str:
    """Return the body of a message of a batch (see ``encode_message``)."""
    return encode_message(
        item.role, item.content, created_us, item.metadata_json, item.idempotency_key,
        item.payload_json, item.link,
    )  # fmt: skip


def decode_message(conversation_id: str, entry: str) -> MessageRow:
    """Return the message row of a stored ``"seq body"`` entry (either encoding).

    One split for the whole entry (a read decodes one per message; the content, last, keeps
    its own newlines).
    """
    parts = entry.split("\n", 5)
    created_us, marked, link = parts[1].partition(":")
    if marked:
        head, _, key, metadata_json, payload, content = parts
    else:  # written before payloads: no payload line, no link
        head, _, key, metadata_json, content = entry.split("\n", 4)
        payload, link = "", "0"
    seq, _, role = head.partition(" ")
    return MessageRow(
        conversation_id, int(seq), role, content, int(created_us), metadata_json,
        key[1:] or None, payload[1:] or None, int(link),
    )  # fmt: skip


def decode_event(entry: Sequence[Any]) -> EventRow:
    """Return the event row of an ``{id, kind, tenant, conversation, data, at}`` reply."""
    event_id, kind, tenant, conversation_id, data_json, at_us = entry
    return EventRow(str(event_id), kind, tenant, conversation_id, data_json, int(at_us))


def encode_fact(fact: FactRow) -> str:
    """Return the stored form of a fact (without its key)."""
    return f"{fact.updated_us} {fact.expires_us} {fact.tier} {fact.value_json}"


def decode_fact(key: str, blob: str, meta: str | None = None) -> FactRow:
    """Return the fact row of a stored blob and of its sibling field (the key + a newline).

    That field holds the source and the history JSON, separated by a newline.

    Facts stored before sources and histories existed have no such field: no source, no
    history.
    """
    updated, expires, tier, value_json = blob.split(" ", 3)
    source_json, _, history_json = (meta or "null\n[]").partition("\n")
    return FactRow(
        key, value_json, tier, int(updated), int(expires), source_json, history_json or "[]"
    )


def json_text(data: object) -> str:
    """Return compact JSON, as the memory backend writes event data."""
    return data_json(data)
