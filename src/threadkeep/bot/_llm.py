"""Optional LLM phrasing through the ``anthropic`` SDK (imported lazily: ``threadkeep[bot]``).

The rules decide what the bot says; the LLM only rewords it, reading the conversation as
``Store.context(id, format="anthropic")`` gives it. Any failure, a slow answer or a reply that
drops the question gives None, and the bot keeps its own words.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["LLMPhraser"]

_MODEL = "claude-haiku-4-5"
_TIMEOUT = 3.0
_SYSTEM = (
    "You reword the next message of a friendly real-estate assistant that qualifies home "
    "sellers. Keep every question and every fact exactly; add no new questions, numbers, "
    "promises or facts. At most two short sentences. Reply with the reworded message only."
)


@dataclass(frozen=True, slots=True)
class LLMPhraser:
    """Rewords the bot's draft replies with Claude.

    Attributes:
        api_key: the Anthropic API key.
        base_url: the API's base URL (None: the SDK's default); tests point it at a local server.
        model: the model to ask.
        timeout: seconds to wait before falling back to the bot's own words.
        max_tokens: the reply's token limit.
        system: the instructions given to the model.
        prompt: the request, with ``{said}`` (the last user message) and ``{draft}``.
    """

    api_key: str
    base_url: str | None = None
    model: str = _MODEL
    timeout: float = _TIMEOUT
    max_tokens: int = 200
    system: str = _SYSTEM
    prompt: str = "The seller said: {said}\n\nReword this reply: {draft}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LLMPhraser | None:
        """Return a phraser configured from ``ANTHROPIC_*`` variables, or None without a key.

        Reads ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``, ``ANTHROPIC_MODEL`` and
        ``THREADKEEP_BOT_LLM_TIMEOUT`` (seconds).

        Args:
            environ: the variables to read (default: ``os.environ``).
        """
        env = os.environ if environ is None else environ
        key = env.get("ANTHROPIC_API_KEY")
        if not key:
            return None
        return cls(
            api_key=key,
            base_url=env.get("ANTHROPIC_BASE_URL") or None,
            model=env.get("ANTHROPIC_MODEL") or _MODEL,
            timeout=float(env.get("THREADKEEP_BOT_LLM_TIMEOUT") or _TIMEOUT),
        )

    async def rephrase(
        self, draft: str, last_user_message: str, *, context: Mapping[str, Any] | None = None
    ) -> str | None:
        """Return ``draft`` reworded, or None when the LLM fails, is slow or drops the question.

        Args:
            draft: the bot's own reply.
            last_user_message: what the user just said (for tone only).
            context: the conversation so far, as ``store.context(id, format="anthropic")``
                returns it; the request joins its last turn.
        """
        try:
            # Imported before the clock starts: a first import can take seconds on a busy host.
            import anthropic  # noqa: F401  (lazy: the core never needs the SDK)
        except ImportError:
            return None
        try:
            async with asyncio.timeout(self.timeout):
                text = await self._ask(draft, last_user_message, context or {})
        except Exception:  # any SDK, network or timeout error: keep the bot's own words
            return None
        text = text.strip()
        if not text or len(text) > 4 * len(draft) + 200:
            return None
        if "?" in draft and "?" not in text:
            return None
        return text

    async def _ask(self, draft: str, said: str, context: Mapping[str, Any]) -> str:
        import anthropic  # already imported by rephrase(): instant

        request = self.prompt.format(said=said, draft=draft)
        system = (
            self.system if not context.get("system") else f"{self.system}\n\n{context['system']}"
        )
        async with anthropic.AsyncAnthropic(
            api_key=self.api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        ) as client:
            reply = await client.messages.create(
                model=self.model,
                max_tokens=self.max_tokens,
                system=system,
                messages=with_request(context.get("messages") or [], request),
            )
        return "".join(block.text for block in reply.content if block.type == "text")


def with_request(messages: list[dict[str, Any]], request: str) -> list[Any]:
    """Return Anthropic ``messages`` ending with a user turn that carries ``request``.

    Joined to the last user turn (the seller's message) when the list ends with one, so turns
    still alternate; added as a user turn of its own otherwise.
    """
    if not messages or messages[-1]["role"] != "user":
        return [*messages, {"role": "user", "content": request}]
    block = {"type": "text", "text": request}
    last = messages[-1]
    content = last["content"]
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    return [*messages[:-1], {**last, "content": [*blocks, block]}]
