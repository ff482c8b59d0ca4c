"""A bot that takes its time (``TK_TEST_BOT_SECONDS``, default 1.5 s) before echoing:
for killing a processor in the middle of a turn."""

from __future__ import annotations

import asyncio
import os

from threadkeep import AsyncStore, Conversation, Message


class SlowBot:
    async def respond(self, store: AsyncStore, conv: Conversation, message: Message) -> str:
        await asyncio.sleep(float(os.environ.get("TK_TEST_BOT_SECONDS", "1.5")))
        return f"echo: {message.content}"
