"""pydantic-ai's ``ConversationStore`` kept in threadkeep (extra ``pydantic_ai``, slim ≥ 2.66).

    from pydantic_ai import Agent
    from pydantic_ai.conversation import Conversation
    from threadkeep import Retention, open_async
    from threadkeep.integrations.pydantic_ai import ThreadkeepConversationStore

    tk = open_async("sqlite:///chats.db")
    store = ThreadkeepConversationStore(tk, retention=Retention(ttl=None))
    conversation = await store.load("c-1") or Conversation(conversation_id="c-1")
    result = await agent.run("Hi", conversation=conversation)
    await store.save(result)

How it maps onto threadkeep, in ``tenant``:

- A pydantic-ai conversation is one threadkeep conversation on channel ``pydantic-ai`` whose
  contact is the ``conversation_id`` (``sha256:…`` when that is not a valid name). Its
  ``ConversationRecord`` is the conversation's state, and the record's ``revision`` is checked
  and replaced under the state's compare-and-set (``expected_version``), so two writers never
  overwrite each other unnoticed.
- Each ``ConversationEntry`` is one message: the ``ModelMessage`` as its payload (its role from
  ``threadkeep.formats.role_for``), the entry's id as its idempotency key, and
  ``{"entry_id", "parent_id"}`` as its metadata. A save appends its new entries in one
  ``append_many`` before it swaps the record, so a record never points at entries that are not
  stored; a save that loses the race leaves its entries unreachable (and invisible to loads).
- Entries are found by id through an index conversation per tenant (contact
  ``pydantic-ai-entries``, kept until deleted) whose messages map an entry id to the
  conversation holding it. ``read_history`` reads each conversation on a history once.
- A fork shares its source's entries, as pydantic-ai intends. Deleting a conversation that was
  never forked erases it (messages, state, events); deleting one that was forked removes its
  record but keeps its entries, which its forks read. Forks read those entries from their
  source conversation, so give the store a ``retention`` that keeps sources as long as their
  forks (``Retention(ttl=None)`` keeps everything until it is deleted).
- Branches are entries of the same conversation, so the conversation's messages (what the
  dashboard shows) hold every branch, in the order they were saved.
- ``read_records`` reads the state of each of the tenant's conversations (one query each).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import pydantic
from pydantic_ai.conversation_store import (
    ConversationConflict,
    ConversationEntry,
    ConversationRecord,
    ConversationStore,
)
from pydantic_ai.messages import ModelMessagesTypeAdapter

from threadkeep import (
    AsyncStore,
    Conversation,
    ConversationNotFound,
    Message,
    Page,
    Retention,
    StateConflict,
    StateSnapshot,
    Store,
)
from threadkeep.integrations._common import Calls, name_for, payload_row

__all__ = ["CHANNEL", "INDEX_CONTACT", "ThreadkeepConversationStore"]

#: The channel of the conversations this adapter starts.
CHANNEL: Final = "pydantic-ai"
#: The contact of each tenant's entry index conversation.
INDEX_CONTACT: Final = "pydantic-ai-entries"
_RECORDS: Final = pydantic.TypeAdapter(ConversationRecord)
_KEEP: Final = Retention(ttl=None)


def _entry_row(entry: ConversationEntry) -> tuple[str, str, dict[str, Any]]:
    return payload_row(
        ModelMessagesTypeAdapter.dump_python([entry.message], mode="json")[0],
        idempotency_key=name_for(entry.id),
        metadata={"entry_id": entry.id, "parent_id": entry.parent_id},
    )


def _entry(message: Message) -> ConversationEntry:
    meta = message.metadata
    return ConversationEntry(
        id=meta["entry_id"],
        parent_id=meta["parent_id"],
        message=ModelMessagesTypeAdapter.validate_python([message.payload])[0],
    )


class ThreadkeepConversationStore(ConversationStore):
    """A pydantic-ai ``ConversationStore`` over a threadkeep store."""

    def __init__(
        self, store: Store | AsyncStore, *, retention: Retention, tenant: str = "default"
    ) -> None:
        """Keep pydantic-ai conversations in ``store``.

        Args:
            store: a threadkeep ``Store`` or ``AsyncStore``.
            retention: how long a conversation lives after its last save (required; see the
                module docs on forks; ``Retention(ttl=None)`` keeps it until ``delete``).
            tenant: the threadkeep tenant of the conversations.

        Raises:
            TypeError: ``store`` is not a Store/AsyncStore, or ``retention`` not a Retention.
        """
        if not isinstance(retention, Retention):
            raise TypeError(f"retention must be a threadkeep Retention, not {retention!r}")
        self.retention = retention
        self.tenant = tenant
        self._calls = Calls(store)

    # ---- the conversation of a record ---------------------------------------------------

    async def _find(self, conversation_id: str) -> Conversation | None:
        found: Conversation | None = await self._calls(
            "find_open", name_for(conversation_id), tenant=self.tenant
        )
        return found

    async def _state(self, conv: Conversation) -> StateSnapshot[Any]:
        snap: StateSnapshot[Any] = await self._calls("load_state", conv.id, tenant=self.tenant)
        return snap

    @staticmethod
    def _record(snap: StateSnapshot[Any]) -> ConversationRecord | None:
        value = snap.value
        if not isinstance(value, dict) or value.get("record") is None:
            return None
        return _RECORDS.validate_python(value["record"])

    async def _save(self, conv: Conversation, value: dict[str, Any], version: int) -> bool:
        """Save ``value`` as the state if it is still at ``version``; False when it moved on."""
        try:
            await self._calls(
                "save_state", conv.id, value, expected_version=version, tenant=self.tenant
            )
        except (StateConflict, ConversationNotFound):
            return False
        return True

    # ---- the entry index ----------------------------------------------------------------

    async def _holder(self, entry_id: str) -> str | None:
        """The id of the threadkeep conversation that holds entry ``entry_id``, if any."""
        index = await self._calls("find_open", INDEX_CONTACT, tenant=self.tenant)
        if index is None:
            return None
        row: Message | None = await self._calls(
            "message_by_key", index.id, name_for(entry_id), tenant=self.tenant
        )
        return None if row is None else row.content

    async def _index(self, conv: Conversation, entries: Sequence[ConversationEntry]) -> None:
        rows = [("system", conv.id, {"idempotency_key": name_for(e.id)}) for e in entries]
        await self._calls.append_for(INDEX_CONTACT, self.tenant, rows, retention=_KEEP)

    # ---- the five primitives ------------------------------------------------------------

    async def read_record(self, conversation_id: str) -> ConversationRecord | None:
        """The record of a conversation, or None if the store does not have it."""
        conv = await self._find(conversation_id)
        return None if conv is None else self._record(await self._state(conv))

    async def read_records(
        self, *, scope: str | None = None, limit: int | None = None
    ) -> Sequence[ConversationRecord]:
        """The records (of ``scope``), most recently saved first, at most ``limit``."""
        records: list[ConversationRecord] = []
        cursor: str | None = None
        while True:
            page: Page[Conversation] = await self._calls(
                "list", tenant=self.tenant, cursor=cursor,
                limit=self._calls.store.limits.max_page,
            )  # fmt: skip
            for conv in page.items:
                if conv.channel != CHANNEL or conv.status == "closed":
                    continue
                record = self._record(await self._state(conv))
                if record is not None and (scope is None or record.scope == scope):
                    records.append(record)
            if (cursor := page.next_cursor) is None:
                break
        records.sort(key=lambda r: r.updated_at, reverse=True)
        return records[:limit]

    async def write_record(
        self,
        record: ConversationRecord,
        *,
        new_entries: Sequence[ConversationEntry] = (),
        expected_revision: str | None,
    ) -> None:
        """Store the new entries, then swap the record if its revision is ``expected_revision``.

        Raises:
            ConversationConflict: the stored revision is not ``expected_revision`` (a record
                exists when it is None), or ``record.head_id`` names an entry the store lacks.
        """
        cid = record.conversation_id
        conv = await self._find(cid)
        snap = None if conv is None else await self._state(conv)
        stored = None if snap is None else self._record(snap)
        if (None if stored is None else stored.revision) != expected_revision:
            raise ConversationConflict(cid)
        new_ids = {e.id for e in new_entries}
        if record.head_id is not None and record.head_id not in new_ids:
            try:
                await self.read_entry(record.head_id)
            except LookupError:
                raise ConversationConflict(cid) from None
        if record.forked_from is not None and stored is None:
            await self._mark_forked(record.forked_from)
        conv, _ = await self._calls.append_for(
            name_for(cid), self.tenant, [_entry_row(e) for e in new_entries],
            retention=self.retention, channel=CHANNEL, metadata={"conversation_id": cid},
        )  # fmt: skip
        if new_entries:
            await self._index(conv, new_entries)
        while True:
            snap = await self._state(conv)
            current = self._record(snap)
            if (None if current is None else current.revision) != expected_revision:
                raise ConversationConflict(cid)
            value = dict(snap.value) if isinstance(snap.value, dict) else {}
            value["record"] = _RECORDS.dump_python(record, mode="json")
            if await self._save(conv, value, snap.version):
                return

    async def _mark_forked(self, conversation_id: str) -> None:
        """Flag a live source conversation as forked, so deleting it keeps its entries.

        Raises:
            ConversationConflict: the source was deleted meanwhile.
        """
        while True:
            conv = await self._find(conversation_id)
            snap = None if conv is None else await self._state(conv)
            if conv is None or snap is None or self._record(snap) is None:
                raise ConversationConflict(conversation_id)
            if await self._save(conv, {**(snap.value or {}), "forked": True}, snap.version):
                return

    async def delete_record(self, conversation_id: str, *, expected_revision: str) -> None:
        """Delete a record; erase its conversation too unless a fork shares its entries.

        Raises:
            ConversationConflict: no record with ``expected_revision`` is stored.
        """
        while True:
            conv = await self._find(conversation_id)
            snap = None if conv is None else await self._state(conv)
            record = None if snap is None else self._record(snap)
            if conv is None or snap is None or record is None:
                raise ConversationConflict(conversation_id)
            if record.revision != expected_revision:
                raise ConversationConflict(conversation_id)
            if await self._save(conv, {**(snap.value or {}), "record": None}, snap.version):
                break
        # A fork flags its source before it writes, and cannot flag a record-less one.
        if not ((await self._state(conv)).value or {}).get("forked"):
            await self._calls("delete", conv.id, tenant=self.tenant)

    async def read_entry(self, entry_id: str) -> ConversationEntry:
        """The entry with this id.

        Raises:
            LookupError: no such entry is stored.
        """
        holder = await self._holder(entry_id)
        message: Message | None = None
        if holder is not None:
            try:
                message = await self._calls(
                    "message_by_key", holder, name_for(entry_id), tenant=self.tenant
                )
            except ConversationNotFound:
                message = None
        if message is None:
            raise LookupError(f"entry {entry_id!r} is not stored")
        return _entry(message)

    async def read_history(
        self, head_id: str | None, *, limit: int | None = None
    ) -> list[ConversationEntry]:
        """The entries up to ``head_id``, oldest first (only the last ``limit``).

        Reads each threadkeep conversation the history passes through once.

        Raises:
            LookupError: an entry of the history is not stored.
        """
        known: dict[str, ConversationEntry] = {}
        history: list[ConversationEntry] = []
        entry_id = head_id
        while entry_id is not None and (limit is None or len(history) < limit):
            if entry_id not in known:
                holder = await self._holder(entry_id)
                try:
                    messages = (
                        [] if holder is None else await self._calls.read_all(holder, self.tenant)
                    )
                except ConversationNotFound:
                    messages = []
                known.update(
                    (m.metadata["entry_id"], _entry(m))
                    for m in messages
                    if m.payload is not None and "entry_id" in m.metadata
                )
                if entry_id not in known:
                    raise LookupError(f"entry {entry_id!r} is not stored")
            entry = known[entry_id]
            history.append(entry)
            entry_id = entry.parent_id
        history.reverse()
        return history
