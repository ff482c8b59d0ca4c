"""Bots that answer a conversation's turn; the service and ``threadkeep chat`` call them.

A bot uses the public Store API only. It is called while the caller holds the conversation's
turn lease, after the user's message was appended; it may read the context, load and save
state (with ``expected_version``), set the stage or status, and returns the reply text, or None
to stay silent.
"""

from __future__ import annotations

from typing import Protocol

from threadkeep._models import Conversation, Message
from threadkeep._store import AsyncStore

__all__ = ["Bot", "EchoBot"]


class Bot(Protocol):
    """Anything that can answer one turn of a conversation."""

    async def respond(
        self, store: AsyncStore, conversation: Conversation, message: Message
    ) -> str | None:
        """Return the reply to ``message`` (already stored), or None to stay silent."""
        ...


class EchoBot:
    """Replies with the user's own words: a bot that takes no time, for tests and benchmarks."""

    async def respond(
        self, store: AsyncStore, conversation: Conversation, message: Message
    ) -> str | None:
        """Return ``"echo: "`` followed by the message's content."""
        return f"echo: {message.content}"
