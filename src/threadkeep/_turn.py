"""Turn handles: a held turn lease, through which appends are fenced by its token."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from threadkeep._models import Conversation, Message

if TYPE_CHECKING:
    from threadkeep._store import AsyncStore, Store

__all__ = ["AsyncTurn", "Turn"]


class _TurnBase:
    def __init__(self, conversation_id: str, token: int, tenant: str | None) -> None:
        self.conversation_id = conversation_id
        self.token = token
        self.tenant = tenant

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.conversation_id} token={self.token}>"


class Turn(_TurnBase):
    """A held turn lease: append through it and the write is fenced by the lease token."""

    def __init__(self, store: Store, conversation_id: str, token: int, tenant: str | None):
        super().__init__(conversation_id, token, tenant)
        self._store = store

    def append(
        self,
        role: str,
        content: str,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        payload: Any = None,
    ) -> Message:
        """Append to the turn's conversation, only while this lease is still current.

        Raises:
            TurnInProgress: the lease ran out and another worker took the turn.
            ConversationNotFound: the conversation is gone.
            ConversationClosed: the conversation was closed.
            InvalidInput: bad role, content, payload or metadata.
        """
        return self._store._append(
            self.conversation_id, role, content, metadata, idempotency_key, self.tenant,
            self.token, payload=payload,
        )  # fmt: skip

    def _append_read(
        self,
        role: str,
        content: str,
        idempotency_key: str | None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[Message, Conversation | None]:
        """Append as ``append`` does; also answer the conversation as of it (Store._append_read)."""
        return self._store._append_read(
            self.conversation_id, role, content, idempotency_key, self.tenant, self.token,
            metadata,
        )  # fmt: skip

    def append_many(self, items: Iterable[tuple[Any, ...]]) -> list[Message]:
        """Append a batch (see Store.append_many), only while this lease is still current.

        Raises:
            TurnInProgress: the lease ran out and another worker took the turn.
            ConversationNotFound: the conversation is gone.
            ConversationClosed: the conversation was closed.
            InvalidInput: a bad item; nothing was written.
        """
        return self._store._append_many(self.conversation_id, items, self.tenant, self.token)


class AsyncTurn(_TurnBase):
    """A held turn lease of an AsyncStore; see Turn."""

    def __init__(self, store: AsyncStore, conversation_id: str, token: int, tenant: str | None):
        super().__init__(conversation_id, token, tenant)
        self._store = store

    async def append(
        self,
        role: str,
        content: str,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        payload: Any = None,
    ) -> Message:
        """Append to the turn's conversation, fenced by the lease (see Turn.append)."""
        return await self._store._append(
            self.conversation_id, role, content, metadata, idempotency_key, self.tenant,
            self.token, payload=payload,
        )  # fmt: skip

    async def _append_read(
        self,
        role: str,
        content: str,
        idempotency_key: str | None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[Message, Conversation | None]:
        """See Turn._append_read."""
        return await self._store._append_read(
            self.conversation_id, role, content, idempotency_key, self.tenant, self.token,
            metadata,
        )  # fmt: skip

    async def append_many(self, items: Iterable[tuple[Any, ...]]) -> list[Message]:
        """Append a batch, fenced by the lease (see Turn.append_many)."""
        return await self._store._append_many(self.conversation_id, items, self.tenant, self.token)
