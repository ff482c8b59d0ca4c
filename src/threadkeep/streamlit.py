"""A Streamlit chat bound to a threadkeep conversation, with the stage guidance beside it.

``chat(store, contact_id=…, tenant=…, agent_id=…, playbook=…)`` renders, in any Streamlit page,
the lead's open conversation (the same one on every page, rerun, browser tab and server
restart, because it lives in the store, not in the session), a reply box, and the playbook's
guidance for the conversation's stage: what is missing before the next stage, the questions
still open, objections the lead raised with how to handle them, and suggested replies (a click
puts one in the reply box). Every ``refresh`` seconds the chat and the guidance are read again,
so what another screen writes shows up by itself. Needs ``pip install 'threadkeep[streamlit]'``.

Open the store once per server process, e.g. with ``st.cache_resource``::

    import streamlit as st
    import threadkeep
    from threadkeep.streamlit import chat

    store = st.cache_resource(threadkeep.open)("sqlite:///threadkeep.db")
    chat(store, contact_id="+15550100", tenant="loc-1", agent_id="jorge", playbook="realtor")
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from threadkeep import (
    Conversation,
    ConversationClosed,
    Message,
    Store,
    guidance as compute_guidance,
)
from threadkeep.playbooks import get_playbook
from threadkeep.playbooks.guidance import FactView, Guidance
from threadkeep.playbooks.model import Playbook

__all__ = ["chat"]

Responder = Callable[[Store, Conversation, Message], "str | None"]

# Material icons ship with Streamlit (no emoji font needed on the machine showing the page).
_AVATARS = {
    "user": ":material/person:",
    "assistant": ":material/smart_toy:",
    "agent": ":material/support_agent:",
    "system": ":material/settings:",
    "tool": ":material/build:",
}


def chat(
    store: Store,
    *,
    contact_id: str,
    tenant: str = "default",
    agent_id: str | None = None,
    playbook: str | Path | Playbook = "seller",
    role: str = "agent",
    channel: str | None = None,
    respond: Responder | None = None,
    refresh: float | None = 2.0,
    history: int = 50,
    key: str | None = None,
) -> Conversation:
    """Render the lead's conversation and its guidance; return the conversation.

    Args:
        store: an open Store (share one per process with ``st.cache_resource``).
        contact_id: the lead.
        tenant: the lead's tenant.
        agent_id: the logged-in agent: a conversation started here records it, and an agent's
            reply sent here makes them the conversation's agent (``Store.assign``). The lead
            has one conversation whoever works it; the page's own keys are the agent's and
            the lead's, so two agents (or two leads) never share a draft.
        playbook: the playbook whose guidance is shown (a shipped name, a path, or a Playbook).
        role: the role of what is typed in the reply box (``agent``: the person replying to
            the lead; ``user`` to play the lead).
        channel: the channel of a conversation started here.
        respond: called after each message with (store, conversation, message); a text it
            returns is appended as the assistant's reply (a bot).
        refresh: seconds between reads of the store (None: only on interaction).
        history: how many recent messages are shown.
        key: distinguishes two chats on one page.

    Returns:
        The conversation as it was when rendered.

    Raises:
        InvalidInput: a bad name or playbook.
    """
    book = get_playbook(playbook)
    first = book.stages[0].id
    prefix = "tk-" + (key or (contact_id if agent_id is None else f"{agent_id}-{contact_id}"))

    def conversation() -> Conversation:
        return store.find_open(contact_id, tenant=tenant) or store.resume(
            contact_id, tenant=tenant, agent_id=agent_id, channel=channel, stage=first
        )

    def send(text: str) -> None:
        conv = conversation()
        try:
            message = store.append(conv.id, role, text, tenant=tenant)
        except ConversationClosed:  # closed on another screen: the lead's next conversation
            conv = store.resume(
                contact_id, tenant=tenant, agent_id=agent_id, channel=channel, stage=first
            )
            message = store.append(conv.id, role, text, tenant=tenant)
        if agent_id is not None and role == "agent" and conv.agent_id != agent_id:
            conv = store.assign(conv.id, agent_id, tenant=tenant)
        if respond is not None:
            reply = respond(store, store.get(conv.id, tenant=tenant), message)
            if reply:
                store.append(conv.id, "assistant", reply, tenant=tenant)

    def on_send() -> None:
        text = str(st.session_state.get(f"{prefix}-draft") or "").strip()
        if text:
            send(text)
            st.session_state[f"{prefix}-draft"] = ""

    def fill(text: str) -> None:
        st.session_state[f"{prefix}-draft"] = text

    def move(stage: str) -> None:
        store.set_stage(conversation().id, stage, tenant=tenant)
        st.session_state[f"{prefix}-confirm"] = False

    @st.fragment(run_every=refresh)
    def render() -> Conversation:
        conv = conversation()
        left, right = st.columns([3, 2], gap="large")
        with left:
            st.caption(f"{contact_id} · {conv.status} · stage {conv.stage or '—'}")
            box = st.container(height=420, border=True)
            for message in store.messages(conv.id, last=history, tenant=tenant):
                with box.chat_message(message.role, avatar=_AVATARS.get(message.role)):
                    st.markdown(message.content)
                    st.caption(f"{message.role} · {message.created_at:%b %d %H:%M}")
            st.text_area("Reply", key=f"{prefix}-draft", height=90)
            st.button("Send", key=f"{prefix}-send", on_click=on_send, type="primary")
        with right:
            _guidance(compute_guidance(store, conv.id, book, tenant=tenant), prefix, fill, move)
        return conv

    result: Conversation = render()
    return result


def _guidance(
    g: Guidance, prefix: str, fill: Callable[[str], None], move: Callable[[str], None]
) -> None:
    st.subheader(g.stage_name)
    if not g.known_stage:
        st.warning(f"This conversation's stage is not in the {g.playbook} playbook.")
    st.markdown("**Suggested replies**")
    for i, suggestion in enumerate(g.suggestions):
        with st.container(border=True):
            st.markdown(suggestion.text)
            st.button(
                "Use this reply",
                key=f"{prefix}-suggest-{i}",
                on_click=fill,
                args=(suggestion.text,),
                help=f"from the {suggestion.kind} rules",
            )
    for objection in g.objections:
        st.warning(f"**Objection: {objection.id.replace('_', ' ')}** — {objection.handling}")
    if g.unanswered:
        st.markdown("**Still to find out**")
        st.markdown("\n".join(f"- {q.ask}" for q in g.unanswered))
    if g.criteria_met or g.criteria_missing:
        st.markdown("**Before moving on**")
        lines = [f"- :material/check_circle: {c.label}" for c in g.criteria_met]
        lines += [f"- :material/radio_button_unchecked: {c.label}" for c in g.criteria_missing]
        st.markdown("\n".join(lines))
    if g.next_stage is not None:
        _move_button(g, prefix, move)
    with st.expander("Objectives and critical actions"):
        st.markdown("\n".join(f"- {o}" for o in g.objectives + g.critical_actions))
    if g.facts:
        with st.expander(f"What we know ({len(g.facts)} facts)"):
            st.table([_fact_row(f) for f in g.facts])


def _move_button(g: Guidance, prefix: str, move: Callable[[str], None]) -> None:
    assert g.next_stage is not None
    confirmed = True
    if not g.ready:
        missing = len(g.criteria_missing)
        confirmed = st.checkbox(
            f"Move on although {missing} {'criterion is' if missing == 1 else 'criteria are'} "
            "missing",
            key=f"{prefix}-confirm",
        )
    st.button(
        f"Move to {g.next_stage_name}",
        key=f"{prefix}-move",
        on_click=move,
        args=(g.next_stage,),
        disabled=not confirmed,
    )


def _fact_row(fact: FactView) -> dict[str, Any]:
    source = fact.source or {}
    previous = fact.history[0].value if fact.history else None
    return {
        "fact": fact.key,
        "value": _text(fact.value),
        "tier": fact.tier,
        "set by": " ".join(str(source[k]) for k in ("kind", "event") if source.get(k)) or "—",
        "updated": f"{fact.updated_at:%b %d %H:%M}",
        "was": "—" if previous is None else _text(previous),
    }


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
