"""What the adapters share: names that fit threadkeep, and calls into a Store or an AsyncStore.

Frameworks name sessions with any string (paths, UUIDs, user ids of any length); threadkeep's
names (tenant, contact, key) are 1-256 printable characters. ``name_for`` keeps a name that
fits as it is and replaces any other by its SHA-256, so every session id maps to exactly one
name and no valid id is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from threadkeep import (
    AsyncStore,
    Conversation,
    ConversationClosed,
    ConversationNotFound,
    InvalidInput,
    Message,
    Store,
)
from threadkeep.formats import role_for

__all__ = ["HASHED", "Calls", "json_copy", "millis", "name_for", "payload_row"]

#: Prefix of a hashed name; a name that starts with it is hashed too, so the mapping is one-to-one.
HASHED: Final = "sha256:"
_MAX_NAME: Final = 256
_NEWEST: Final = sys.maxsize


def name_for(text: str) -> str:
    """Return ``text`` if it is a valid threadkeep name, else ``sha256:`` and its hex digest.

    Valid: 1-256 printable characters, not blank, not starting with ``sha256:``.
    """
    if (
        0 < len(text) <= _MAX_NAME
        and text.isprintable()
        and text.strip()
        and not text.startswith(HASHED)
    ):
        return text
    return HASHED + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def json_copy(value: Any) -> Any:
    """Return ``value`` as it reads back from JSON (tuples become lists), as a file store would.

    Raises:
        TypeError: a value JSON cannot hold.
    """
    return json.loads(json.dumps(value))


def payload_row(item: Any, **options: Any) -> tuple[str, str, dict[str, Any]]:
    """Return the ``append_many`` item that keeps a framework's item verbatim as the payload.

    The role is ``threadkeep.formats.role_for(item)``; an item threadkeep cannot read (an
    encrypted envelope, a title or progress line) is stored as ``system``. The content is empty:
    the item's text is derived from the payload where it is shown.

    Args:
        item: a JSON object (it is stored as it reads back from JSON).
        **options: more ``append_many`` options (``idempotency_key``, ``metadata``).

    Raises:
        TypeError: the item holds a value JSON cannot keep.
    """
    payload = json_copy(item)
    try:
        role = role_for(payload)
    except InvalidInput:
        role = "system"
    return role, "", {"payload": payload, **options}


def millis(when: datetime) -> int:
    """Return ``when`` in Unix epoch milliseconds."""
    return int(when.timestamp() * 1000)


class Calls:
    """Calls a ``Store`` in a worker thread, or an ``AsyncStore`` directly, from async code.

    A sync ``Store`` serves any number of event loops and threads at once (the OpenAI Agents
    SDK's ``Runner.run_sync`` starts a loop of its own); so does an ``AsyncStore``.
    """

    def __init__(self, store: Store | AsyncStore) -> None:
        if not isinstance(store, Store | AsyncStore):
            raise TypeError(f"store must be a threadkeep Store or AsyncStore, not {store!r}")
        self.store = store

    async def __call__(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the store's ``method`` and return what it returns."""
        bound = getattr(self.store, method)
        if isinstance(self.store, AsyncStore):
            return await bound(*args, **kwargs)
        return await asyncio.to_thread(bound, *args, **kwargs)

    async def read_all(self, conversation_id: str, tenant: str) -> list[Message]:
        """Return every message of a conversation, oldest first, page by page."""
        page_size = self.store.limits.max_page
        out: list[Message] = []
        after = 0
        while True:
            page: list[Message] = await self(
                "messages", conversation_id, after=after, limit=page_size, tenant=tenant
            )
            out.extend(page)
            if len(page) < page_size:
                return out
            after = page[-1].seq

    async def read_tail(self, conversation_id: str, count: int, tenant: str) -> list[Message]:
        """Return the newest ``count`` messages, oldest first, exactly (no window rules)."""
        page_size = self.store.limits.max_page
        pages: list[list[Message]] = []
        before, left = _NEWEST, count
        while left > 0:
            page: list[Message] = await self(
                "messages", conversation_id, before=before, limit=min(left, page_size),
                tenant=tenant,
            )  # fmt: skip
            pages.append(page)
            if len(page) < min(left, page_size):
                break
            left -= len(page)
            before = page[0].seq
        return [m for page in reversed(pages) for m in page]

    async def append_all(
        self, conversation_id: str, items: Sequence[tuple[Any, ...]], tenant: str
    ) -> list[Message]:
        """Append ``items`` with ``append_many``, in batches of at most ``Limits.max_batch``.

        Each batch is atomic; a list longer than one batch is not.
        """
        size = self.store.limits.max_batch
        out: list[Message] = []
        for start in range(0, len(items), size):
            out.extend(
                await self(
                    "append_many",
                    conversation_id,
                    list(items[start : start + size]),
                    tenant=tenant,
                )  # fmt: skip
            )
        return out

    async def append_for(
        self, contact_id: str, tenant: str, items: Sequence[tuple[Any, ...]], **start: Any
    ) -> tuple[Conversation, list[Message]]:
        """Append ``items`` to the contact's open conversation, starting it if there is none.

        ``resume`` makes the get-or-start atomic, so two processes writing a new session at once
        share one conversation. A conversation closed or expired between the two calls is
        replaced by a new one, once.

        Args:
            contact_id: the contact (the framework's session, mapped by ``name_for``).
            tenant: its tenant.
            items: ``append_many`` items.
            **start: ``resume`` arguments used when a conversation is started.
        """
        conv: Conversation = await self("resume", contact_id, tenant=tenant, **start)
        try:
            return conv, await self.append_all(conv.id, items, tenant)
        except (ConversationClosed, ConversationNotFound):
            pass
        conv = await self("resume", contact_id, tenant=tenant, **start)
        return conv, await self.append_all(conv.id, items, tenant)
