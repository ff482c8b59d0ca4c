"""A short scripted tour of the threadkeep API: ``python -m threadkeep.demo [STORE_URL]``.

It writes to ``sqlite:///./threadkeep-demo.db`` by default (or the URL given, or
``$THREADKEEP_STORE``) and prints each step.
"""

from __future__ import annotations

import os
import sys

from pydantic import BaseModel

import threadkeep

DEFAULT_URL = "sqlite:///./threadkeep-demo.db"


class Lead(BaseModel):
    """The typed state the demo keeps for a conversation."""

    budget: int | None = None
    rooms: int | None = None


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def run(url: str) -> None:
    """Run the tour against the store at ``url``.

    Args:
        url: a store URL such as ``sqlite:///./demo.db`` or ``memory://``.
    """
    _say(f"opening {url}")
    with threadkeep.open(url) as store:
        conv = store.start("demo-contact", tenant="demo", agent_id="seller", stage="Q0")
        _say(f"start      -> {conv.id} status={conv.status} stage={conv.stage}")
        for role, text in [
            ("user", "Hi, I am looking for a flat."),
            ("assistant", "Happy to help! What is your budget?"),
            ("user", "About 300k, 3 rooms."),
        ]:
            msg = store.append(conv.id, role, text)
            _say(f"append     -> seq={msg.seq} {role}: {text}")
        version = store.save_state(conv.id, Lead(budget=300_000, rooms=3), expected_version=0)
        snap = store.load_state(conv.id, Lead)
        _say(f"save_state -> v{version}; load_state -> {snap.value!r}")
        conv = store.set_stage(conv.id, "Q1")
        _say(f"set_stage  -> {conv.stage}; status={conv.status} messages={conv.message_count}")
        _say(f"context    -> {store.context(conv.id)[-1]}")
        page = store.list(tenant="demo", limit=5)
        _say(f"list       -> {len(page.items)} conversation(s) for tenant 'demo':")
        for c in page.items:
            _say(f"             {c.id} {c.contact_id} {c.status} {c.stage} {c.message_count} msg")
        _say("events     ->")
        for event in store.events(tenant="demo"):
            if event.conversation_id == conv.id:
                _say(f"             {event.kind} {event.data}")
        counts = store.counts(tenant="demo")
        _say(f"counts     -> total={counts.total} by_status={counts.by_status}")
        store.close_conversation(conv.id)
        _say(f"close      -> {store.get(conv.id).status}")
    _say("done: try `threadkeep ls --tenant demo --store " + url + "`")


def main() -> None:
    """Entry point of ``python -m threadkeep.demo``."""
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("THREADKEEP_STORE", DEFAULT_URL)
    try:
        run(url)
    except threadkeep.ThreadkeepError as e:
        sys.stderr.write(f"error: {type(e).__name__}: {e}\n")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
