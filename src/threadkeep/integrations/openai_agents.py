"""The OpenAI Agents SDK's ``Session`` kept in threadkeep (extra ``openai_agents``).

    from agents import Agent, Runner
    from threadkeep import Retention, open as open_store
    from threadkeep.integrations.openai_agents import ThreadkeepSession

    store = open_store("redis://127.0.0.1:6379/0")
    session = ThreadkeepSession("user-42", store, retention=Retention(ttl=None))
    result = await Runner.run(agent, "Hi", session=session)

One session id is one threadkeep conversation: its contact is the session id (or, when the id
is not a valid name, ``sha256:`` and its digest), in ``tenant``, on channel ``openai-agents``;
``resume`` makes the first write atomic across processes, so two workers starting the same
session share one conversation. Each item is one message whose payload is the item exactly as
given (it reads back deep-equal); its role comes from ``threadkeep.formats.role_for``, and an
item threadkeep cannot read (an ``EncryptedSession`` envelope) is stored as ``system``.
Messages written without a payload (a person answering from the dashboard) read back as
``{"role", "content"}`` items, ``agent`` as ``assistant``.

``get_items(limit=n)`` returns exactly the newest ``n`` items (``n <= 0``: none, as the
``Session`` protocol documents; ``SQLiteSession`` reads a negative limit as "all");
``pop_item`` is one atomic ``pop_last``; ``clear_session`` keeps the conversation, its state
and lifecycle (``clear_messages``). A closed conversation ends the session's history: reads
see nothing and the next write starts a new conversation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, cast

from agents.items import TResponseInputItem
from agents.memory.session_settings import (
    SessionSettings,
    coerce_session_settings,
    resolve_session_limit,
)

from threadkeep import (
    AsyncStore,
    Conversation,
    ConversationClosed,
    ConversationNotFound,
    Message,
    Retention,
    Store,
)
from threadkeep.integrations._common import Calls, name_for, payload_row

__all__ = ["CHANNEL", "ThreadkeepSession", "message_item"]

#: The channel of the conversations this adapter starts (``threadkeep import --from openai-…``
#: starts the same ones, so a session carries on after moving in).
CHANNEL: Final = "openai-agents"
_SPOKEN_AS: Final = {"agent": "assistant", "tool": "user"}


def message_item(message: Message) -> TResponseInputItem:
    """Return the Agents SDK item a stored message stands for."""
    if message.payload is not None:
        item: TResponseInputItem = message.payload
        return item
    role = _SPOKEN_AS.get(message.role, message.role)
    return cast(TResponseInputItem, {"role": role, "content": message.content})


class ThreadkeepSession:
    """An OpenAI Agents SDK ``Session`` whose items live in a threadkeep conversation.

    Attributes:
        session_id: the SDK's session id.
        session_settings: the SDK's settings (``limit`` is the default read size).
        tenant: the threadkeep tenant of the conversation.
        retention: the retention a new conversation is started with.
    """

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        store: Store | AsyncStore,
        *,
        retention: Retention,
        tenant: str = "default",
        agent_id: str | None = None,
        session_settings: SessionSettings | Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a session id to its conversation (started on the first write).

        Args:
            session_id: any string; one that is not a valid threadkeep name (over 256
                characters, unprintable) is mapped to ``sha256:<hex>``, never refused.
            store: a threadkeep ``Store`` or ``AsyncStore``.
            retention: how long the conversation lives (required: agent sessions should not
                vanish by a default; ``Retention(ttl=None)`` keeps it until deleted).
            tenant: the tenant of the conversation.
            agent_id: recorded on the conversation when it is started.
            session_settings: ``SessionSettings`` or a dict of its fields.

        Raises:
            TypeError: ``store`` is not a Store/AsyncStore, or an unknown settings field.
        """
        if not isinstance(retention, Retention):
            raise TypeError(f"retention must be a threadkeep Retention, not {retention!r}")
        self.session_id = session_id
        self.session_settings = (
            SessionSettings() if session_settings is None
            else coerce_session_settings(dict(session_settings))
            if isinstance(session_settings, Mapping) else session_settings
        )  # fmt: skip
        self.tenant = tenant
        self.retention = retention
        self._agent_id = agent_id
        self._calls = Calls(store)
        self._contact = name_for(session_id)

    def __repr__(self) -> str:
        return f"ThreadkeepSession({self.session_id!r}, tenant={self.tenant!r})"

    async def _conversation(self) -> Conversation | None:
        found: Conversation | None = await self._calls(
            "find_open", self._contact, tenant=self.tenant
        )
        return found

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """Return the newest ``limit`` items (default ``session_settings.limit``, else all).

        Items come back oldest first and deep-equal to what was added.
        """
        count = resolve_session_limit(limit, self.session_settings)
        if count is not None and count <= 0:
            return []
        conv = await self._conversation()
        if conv is None:
            return []
        try:
            if count is None:
                messages = await self._calls.read_all(conv.id, self.tenant)
            else:
                messages = await self._calls.read_tail(conv.id, count, self.tenant)
        except ConversationNotFound:
            return []
        return [message_item(m) for m in messages]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` in one transaction (batches of ``Limits.max_batch`` each).

        Raises:
            InvalidInput: an item over ``Limits.max_payload_bytes``; nothing was written.
        """
        if not items:
            return
        rows = [payload_row(item) for item in items]
        await self._calls.append_for(
            self._contact, self.tenant, rows, retention=self.retention,
            agent_id=self._agent_id, channel=CHANNEL,
        )  # fmt: skip

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the newest item and return it, atomically (None when there is none)."""
        conv = await self._conversation()
        if conv is None:
            return None
        try:
            popped: Message | None = await self._calls("pop_last", conv.id, tenant=self.tenant)
        except (ConversationClosed, ConversationNotFound):
            return None
        return None if popped is None else message_item(popped)

    async def clear_session(self) -> None:
        """Remove every item; the conversation, its state and lifecycle stay."""
        conv = await self._conversation()
        if conv is None:
            return
        try:
            await self._calls("clear_messages", conv.id, tenant=self.tenant)
        except (ConversationClosed, ConversationNotFound):
            return
