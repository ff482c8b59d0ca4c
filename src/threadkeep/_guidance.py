"""``threadkeep.guidance()``: a conversation's stage guidance, read from a Store or AsyncStore.

It reads the conversation, its state, the contact's facts and the recent messages (public API
only), then applies the pure rules of ``threadkeep.playbooks.guidance``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from threadkeep._store import AsyncStore, Store

if TYPE_CHECKING:
    from threadkeep.bot._llm import LLMPhraser
    from threadkeep.playbooks.guidance import Guidance
    from threadkeep.playbooks.model import Playbook

__all__ = ["guidance"]


@overload
def guidance(
    store: Store,
    conversation_id: str,
    playbook: str | Path | Playbook = ...,
    *,
    tenant: str | None = ...,
    phraser: LLMPhraser | None = ...,
) -> Guidance: ...


@overload
def guidance(
    store: AsyncStore,
    conversation_id: str,
    playbook: str | Path | Playbook = ...,
    *,
    tenant: str | None = ...,
    phraser: LLMPhraser | None = ...,
) -> Coroutine[Any, Any, Guidance]: ...


def guidance(
    store: Store | AsyncStore,
    conversation_id: str,
    playbook: str | Path | Playbook = "seller",
    *,
    tenant: str | None = None,
    phraser: LLMPhraser | None = None,
) -> Guidance | Coroutine[Any, Any, Guidance]:
    """Return the guidance for a conversation's current stage (awaitable with an AsyncStore).

    Args:
        store: a Store (returns the guidance) or an AsyncStore (returns a coroutine).
        conversation_id: the conversation.
        playbook: a shipped playbook's name (``seller``, ``realtor``), a file path, or a
            Playbook.
        tenant: when given, a conversation of another tenant is not found.
        phraser: rewords the suggestions with an LLM (see
            ``threadkeep.playbooks.guidance.guidance_phraser``); None keeps the rules' words.

    Returns:
        Objectives, unanswered key questions, objections seen with their handling, critical
        actions, transition criteria met and missing, three suggested replies, and the
        contact's facts.

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
        InvalidInput: a malformed id, or a playbook that cannot be loaded.
    """
    from threadkeep.playbooks import get_playbook

    book = get_playbook(playbook)
    if isinstance(store, AsyncStore):
        return _guidance_async(store, conversation_id, book, tenant, phraser)
    from threadkeep.playbooks.guidance import RECENT, compute, reword

    conv = store.get(conversation_id, tenant=tenant)
    snap = store.load_state(conv.id, tenant=conv.tenant)
    facts = store.recall(conv.contact_id, tenant=conv.tenant)
    recent = store.messages(conv.id, last=RECENT, tenant=conv.tenant)
    result = compute(
        book, conv, state=snap.value, state_version=snap.version, facts=facts, messages=recent
    )
    if phraser is None:
        return result
    return asyncio.run(reword(result, phraser, _last_user(recent)))


async def _guidance_async(
    store: AsyncStore,
    conversation_id: str,
    book: Playbook,
    tenant: str | None,
    phraser: LLMPhraser | None,
) -> Guidance:
    from threadkeep.playbooks.guidance import RECENT, compute, reword

    conv = await store.get(conversation_id, tenant=tenant)
    snap = await store.load_state(conv.id, tenant=conv.tenant)
    facts = await store.recall(conv.contact_id, tenant=conv.tenant)
    recent = await store.messages(conv.id, last=RECENT, tenant=conv.tenant)
    result = compute(
        book, conv, state=snap.value, state_version=snap.version, facts=facts, messages=recent
    )
    if phraser is None:
        return result
    return await reword(result, phraser, _last_user(recent))


def _last_user(messages: list[Any]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")
