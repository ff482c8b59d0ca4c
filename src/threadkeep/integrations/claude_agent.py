"""The Claude Agent SDK's ``SessionStore`` kept in threadkeep (extra ``claude_agent``).

    from claude_agent_sdk import ClaudeAgentOptions, query
    from threadkeep import Retention, open_async
    from threadkeep.integrations.claude_agent import ThreadkeepSessionStore

    store = ThreadkeepSessionStore(open_async("postgresql://…"), retention=Retention(ttl=None))
    async for message in query(prompt="Hi", options=ClaudeAgentOptions(session_store=store)): ...

How a transcript maps onto threadkeep:

- ``project_key`` is the tenant (``tenant_prefix`` + the key; ``sha256:…`` when that is not a
  valid name). Multi-tenant apps set ``project_key`` to their tenant, as the SDK advises.
- A main transcript is one conversation whose contact is the ``session_id``; a subagent
  transcript (``subpath``) is a conversation of its own whose contact is ``session_id|subpath``
  (with ``|`` and the backslash escaped) and whose ``agent_id`` is the main transcript's
  contact, which is how ``list_subkeys`` and the cascading ``delete`` find them. All are on channel
  ``claude-agent``, with ``session_id`` (and ``subpath``) in their metadata.
- Each entry is one message whose payload is the entry (it reads back deep-equal); its
  ``uuid`` is the message's idempotency key, so a batch the SDK sends again is stored once.
  The role is ``threadkeep.formats.role_for(entry)`` (``user``, ``assistant``, ``tool`` for
  tool results); entries that are not dialogue (titles, summaries, progress) are ``system``.
- ``list_session_summaries`` returns the SDK's ``fold_session_summary`` output, kept in the
  conversation's state and folded under a compare-and-set (``expected_version``), so racing
  appends never lose a fold; its ``mtime`` is when that state was saved, on the store's clock
  like ``list_sessions``'s ``mtime`` (the conversation's last activity).

A conversation closed from the dashboard ends its transcript: ``load`` returns None and the
next append starts a new one. Messages added without a payload are not transcript entries and
are not returned by ``load``.
"""

from __future__ import annotations

from typing import Any, Final

from claude_agent_sdk import (
    SessionKey,
    SessionListSubkeysKey,
    SessionStoreEntry,
    SessionStoreListEntry,
    SessionSummaryEntry,
    fold_session_summary,
)

from threadkeep import (
    AsyncStore,
    Conversation,
    Page,
    Retention,
    StateConflict,
    StateSnapshot,
    Store,
)
from threadkeep.integrations._common import Calls, millis, name_for, payload_row

__all__ = ["CHANNEL", "SUMMARY", "ThreadkeepSessionStore"]

#: The channel of the conversations this adapter starts.
CHANNEL: Final = "claude-agent"
#: The state field that keeps a main transcript's summary (``fold_session_summary``'s data).
SUMMARY: Final = "claude_session_summary"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _row(entry: SessionStoreEntry) -> tuple[str, str, dict[str, Any]]:
    uuid = entry.get("uuid")
    if isinstance(uuid, str) and uuid:
        return payload_row(entry, idempotency_key=name_for(uuid))
    return payload_row(entry)


class ThreadkeepSessionStore:
    """A Claude Agent SDK ``SessionStore`` over a threadkeep store.

    Attributes:
        retention: the retention new conversations are started with.
        tenant_prefix: put before each ``project_key`` to make its tenant.
    """

    def __init__(
        self, store: Store | AsyncStore, *, retention: Retention, tenant_prefix: str = ""
    ) -> None:
        """Keep the SDK's transcripts in ``store``.

        Args:
            store: a threadkeep ``Store`` or ``AsyncStore``.
            retention: how long a transcript lives after its last append (required: the SDK
                leaves retention to the store; ``Retention(ttl=None)`` keeps transcripts until
                ``delete``).
            tenant_prefix: put before each ``project_key`` to make its tenant (to keep the
                SDK's projects apart from other tenants of the same store).

        Raises:
            TypeError: ``store`` is not a Store/AsyncStore, or ``retention`` not a Retention.
        """
        if not isinstance(retention, Retention):
            raise TypeError(f"retention must be a threadkeep Retention, not {retention!r}")
        self.retention = retention
        self.tenant_prefix = tenant_prefix
        self._calls = Calls(store)

    def _tenant(self, project_key: str) -> str:
        return name_for(self.tenant_prefix + project_key)

    @staticmethod
    def _main(session_id: str) -> str:
        return name_for(_escape(session_id))

    def _contact(self, key: SessionKey) -> str:
        subpath = key.get("subpath")
        if subpath is None:
            return self._main(key["session_id"])
        return name_for(f"{_escape(key['session_id'])}|{_escape(subpath)}")

    async def _find(self, key: SessionKey) -> Conversation | None:
        found: Conversation | None = await self._calls(
            "find_open", self._contact(key), tenant=self._tenant(key["project_key"])
        )
        return found

    async def _listed(self, tenant: str, agent_id: str | None = None) -> list[Conversation]:
        """This adapter's conversations in ``tenant`` (with ``agent_id``), closed ones too."""
        out: list[Conversation] = []
        cursor: str | None = None
        while True:
            page: Page[Conversation] = await self._calls(
                "list", tenant=tenant, agent_id=agent_id, cursor=cursor,
                limit=self._calls.store.limits.max_page,
            )  # fmt: skip
            out.extend(c for c in page.items if c.channel == CHANNEL)
            if (cursor := page.next_cursor) is None:
                return out

    async def _sessions(self, project_key: str) -> list[Conversation]:
        return [
            c
            for c in await self._listed(self._tenant(project_key))
            if c.status != "closed" and "subpath" not in c.metadata
        ]

    async def append(self, key: SessionKey, entries: list[SessionStoreEntry]) -> None:
        """Store a batch of transcript entries in one transaction, each uuid once.

        Raises:
            InvalidInput: an entry over ``Limits.max_payload_bytes`` (raise it with
                ``threadkeep.open(url, limits=Limits(max_payload_bytes=…))``); nothing was
                written.
        """
        if not entries:
            return
        rows = [_row(entry) for entry in entries]
        subpath = key.get("subpath")
        metadata = {"session_id": key["session_id"]}
        if subpath is not None:
            metadata["subpath"] = subpath
        tenant = self._tenant(key["project_key"])
        conv, stored = await self._calls.append_for(
            self._contact(key), tenant, rows, retention=self.retention, channel=CHANNEL,
            metadata=metadata,
            agent_id=None if subpath is None else self._main(key["session_id"]),
        )  # fmt: skip
        fresh = [row[2]["payload"] for row, m in zip(rows, stored, strict=True) if not m.replayed]
        if subpath is None and fresh:
            await self._fold(conv, tenant, key, fresh)

    async def _fold(
        self, conv: Conversation, tenant: str, key: SessionKey, entries: list[Any]
    ) -> None:
        """Fold ``entries`` into the summary kept in the state, retrying on a racing save."""
        while True:
            snap: StateSnapshot[Any] = await self._calls("load_state", conv.id, tenant=tenant)
            value = dict(snap.value) if isinstance(snap.value, dict) else {}
            prev: SessionSummaryEntry | None = None
            if isinstance(value.get(SUMMARY), dict):
                prev = {"session_id": key["session_id"], "mtime": 0, "data": value[SUMMARY]}
            value[SUMMARY] = fold_session_summary(prev, key, entries)["data"]
            try:
                await self._calls(
                    "save_state", conv.id, value, expected_version=snap.version, tenant=tenant
                )
            except StateConflict:
                continue
            return

    async def load(self, key: SessionKey) -> list[SessionStoreEntry] | None:
        """Return a transcript's entries in append order, or None when it was never written."""
        conv = await self._find(key)
        if conv is None:
            return None
        messages = await self._calls.read_all(conv.id, self._tenant(key["project_key"]))
        return [m.payload for m in messages if m.payload is not None]

    async def list_sessions(self, project_key: str) -> list[SessionStoreListEntry]:
        """Return the project's main transcripts with their last activity in epoch ms."""
        return [
            {"session_id": c.metadata["session_id"], "mtime": millis(c.last_activity_at)}
            for c in await self._sessions(project_key)
        ]

    async def list_session_summaries(self, project_key: str) -> list[SessionSummaryEntry]:
        """Return the summaries kept for the project's main transcripts."""
        tenant = self._tenant(project_key)
        out: list[SessionSummaryEntry] = []
        for conv in await self._sessions(project_key):
            snap: StateSnapshot[Any] = await self._calls("load_state", conv.id, tenant=tenant)
            if isinstance(snap.value, dict) and snap.saved_at is not None and SUMMARY in snap.value:
                out.append(
                    {
                        "session_id": conv.metadata["session_id"],
                        "mtime": millis(snap.saved_at),
                        "data": snap.value[SUMMARY],
                    }
                )
        return out

    async def delete(self, key: SessionKey) -> None:
        """Erase a transcript; a main transcript takes its subagent transcripts with it."""
        tenant = self._tenant(key["project_key"])
        if key.get("subpath") is None:
            main = self._main(key["session_id"])
            for sub in await self._listed(tenant, agent_id=main):
                await self._calls("delete_contact", sub.contact_id, tenant=tenant)
        await self._calls("delete_contact", self._contact(key), tenant=tenant)

    async def list_subkeys(self, key: SessionListSubkeysKey) -> list[str]:
        """Return the subpaths of a session's subagent transcripts."""
        subs = await self._listed(
            self._tenant(key["project_key"]), agent_id=self._main(key["session_id"])
        )
        return sorted(
            {
                c.metadata["subpath"]
                for c in subs
                if c.status != "closed" and "subpath" in c.metadata
            }
        )
