"""Bots that answer a conversation's turn, and the one turn the service and the CLI share.

A bot uses the public Store API only. ``answer()`` calls it while holding the conversation's
turn lease, after the user's message was stored; it may read the context, load and save state
(with ``expected_version``), set the stage or status, and returns the reply text, items (tool
calls and results stored as their own messages, then the reply: see ``Reply``), or None to
stay silent. ``make_bot()`` builds the bot a setting names: ``seller`` (the demo bot), ``echo``,
or an import string ``package.module:attribute`` naming a bot or a function that returns one.
"""

from __future__ import annotations

from threadkeep import AsyncStore, Conversation, Message
from threadkeep.bot._factory import BOT_NAMES, make_bot
from threadkeep.bot._turn import (
    Answer,
    Bot,
    Reply,
    TurnIncomplete,
    answer,
    fact_is_internal,
    opted_out,
    respond_to,
)

__all__ = [
    "BOT_NAMES",
    "Answer",
    "Bot",
    "EchoBot",
    "Reply",
    "TurnIncomplete",
    "answer",
    "fact_is_internal",
    "make_bot",
    "opted_out",
    "respond_to",
]


class EchoBot:
    """Replies with the user's own words: a bot that takes no time, for tests and benchmarks."""

    async def respond(
        self, store: AsyncStore, conversation: Conversation, message: Message
    ) -> str | None:
        """Return ``"echo: "`` followed by the message's content."""
        return f"echo: {message.content}"
