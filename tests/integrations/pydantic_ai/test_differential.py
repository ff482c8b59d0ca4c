"""One script of ConversationStore operations on pydantic-ai's InMemoryConversationStore and
on ThreadkeepConversationStore: every observation equal.

The script runs agents with tool calls (``TestModel`` calls every tool), saves and loads
(whole and with ``limit``), reads entries, branches (``at`` and ``from_entry``) and continues
the branch, forks (whole, ``at``, ``from_entry``) and continues a fork, lists by scope (with
``limit``), deletes a conversation a fork shares entries with and one nothing shares, and
saves in conflict (two copies of one revision, a new conversation over an existing id, a
stale branch, a foreign scope). Observations are normalised only where two runs cannot agree:
times are dropped and generated ids (entry ids, revisions, run ids) become labels in order of
first appearance, so which id is which still has to match.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.conversation import Conversation
from pydantic_ai.conversation_store import ConversationStore, InMemoryConversationStore
from pydantic_ai.exceptions import UserError
from pydantic_ai.models.test import TestModel
from pydantic_core import to_jsonable_python

from threadkeep import Retention
from threadkeep.integrations.pydantic_ai import ThreadkeepConversationStore

pytestmark = pytest.mark.anyio
GENERATED = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIMES = {"timestamp", "updated_at"}


def make_agent() -> Agent[None, str]:
    agent = Agent(TestModel())

    @agent.tool_plain
    def estimate(zip_code: str) -> str:
        return f"450k near {zip_code}"

    return agent


class Normaliser:
    def __init__(self) -> None:
        self.labels: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items() if k not in TIMES}
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, str) and GENERATED.match(value):
            return self.labels.setdefault(value, f"id{len(self.labels)}")
        return value


async def script(store: ConversationStore) -> list[Any]:
    obs: list[Any] = []
    norm = Normaliser()
    agent = make_agent()

    def see(tag: str, value: Any) -> None:
        obs.append((tag, norm(to_jsonable_python(value))))

    async def attempt(tag: str, coro: Any) -> Any:
        try:
            result = await coro
        except (UserError, LookupError) as exc:
            obs.append((tag, type(exc).__name__))
            return None
        see(tag, result)
        return result

    async def turn(cid: str, prompt: str, scope: str | None = None) -> Conversation:
        conv = await store.load(cid, scope=scope) or Conversation(conversation_id=cid)
        result = await agent.run(prompt, conversation=conv)
        see(f"saved {cid}", await store.save(result, scope=scope))
        return result.conversation

    # runs with tool calls, saved and loaded
    await turn("a", "price of my house in 78701?", scope="alice")
    conv_a = await turn("a", "and in 78702?", scope="alice")
    see("load a", await store.load("a"))
    see("load a limit 3", await store.load("a", limit=3))
    entries = await store.load_entries("a")
    see("entries a", entries)
    see("entries a limit 2", await store.load_entries("a", limit=2))
    assert entries is not None and len(entries) == 6  # 4 with the tool call, then 2

    # conflicting saves: two copies of one revision; a new conversation over an existing id
    copy1 = await store.load("a")
    copy2 = await store.load("a")
    assert copy1 is not None and copy2 is not None
    await turn("a", "third question", scope="alice")
    for tag, conv in (("stale copy", copy1), ("stale copy again", copy2)):
        conv.messages.append(conv_a.messages[0])
        await attempt(tag, store.save(conv))
    await attempt("new over existing", store.save(Conversation(conversation_id="a")))
    await attempt("foreign scope", store.save(await store.load("a") or conv_a, scope="bob"))
    await attempt("load foreign scope", store.load("a", scope="bob"))

    # branch by position and by entry, continue the branch, branch back
    loaded = await store.load("a")
    assert loaded is not None
    await attempt("stale branch", store.branch("a", at=2, expected_revision="nope"))
    branched = await store.branch("a", at=4, expected_revision=loaded.revision)
    see("branched", branched)
    result = await agent.run("instead, 78703?", conversation=branched)
    see("saved branch", await store.save(result))
    record = await store.read_record("a")
    see("record after branch", record)
    assert record is not None and len(record.branches) == 1
    back = await store.branch(
        "a", from_entry=record.branches[0], expected_revision=result.conversation.revision
    )
    see("branched back", back)
    await attempt("branch out of range", store.branch("a", at=99, expected_revision=back.revision))
    await attempt(
        "branch unknown entry",
        store.branch("a", from_entry="nope", expected_revision=back.revision),
    )

    # forks: whole, at a position, from an entry; continue one
    see("fork whole", await store.fork("a", new_conversation_id="f1"))
    see("fork at", await store.fork("a", at=4, new_conversation_id="f2", scope="bob"))
    first = (await store.load_entries("a") or [])[0]
    see("fork from entry", await store.fork("a", from_entry=first.id, new_conversation_id="f3"))
    await attempt("fork over existing", store.fork("a", new_conversation_id="f1"))
    await attempt("fork missing", store.fork("nope", new_conversation_id="f9"))
    await turn("f2", "go on in the fork", scope="bob")

    # list by scope, with a limit
    await turn("c", "another client", scope="bob")
    for scope, limit in ((None, None), ("alice", None), ("bob", None), ("bob", 1), ("carol", None)):
        listed = await store.list_conversations(scope=scope, limit=limit)
        see(f"list {scope} {limit}", [(r.conversation_id, r.scope, r.forked_from) for r in listed])

    # delete: one that forks share entries with, one nothing shares, a foreign scope
    await attempt("stale delete", store.delete_record("f1", expected_revision="nope"))
    await store.delete("a", scope="bob")
    see("a kept under foreign scope", await store.read_record("a") is not None)
    await store.delete("a")
    see("a deleted", await store.load("a"))
    see("fork of deleted still loads", await store.load("f1"))
    see("continued fork still loads", await store.load("f2"))
    await store.delete("c")
    see("c deleted", await store.load("c"))
    see("list after delete", [r.conversation_id for r in await store.list_conversations()])
    await turn("a", "a new conversation under the old id", scope="carol")
    see("new a", await store.load_entries("a"))
    await attempt("read entry of erased conversation", store.read_entry(first.id))
    return obs


async def test_same_script_same_results(open_store: Callable[[], Any]) -> None:
    reference = await script(InMemoryConversationStore())
    ours = await script(
        ThreadkeepConversationStore(
            open_store(), retention=Retention(ttl=None), tenant=f"t-{uuid.uuid4().hex}"
        )
    )
    assert len(reference) == len(ours) == 41
    for expected, got in zip(reference, ours, strict=True):
        assert got == expected, expected[0]
    tags = dict(reference)
    assert tags["stale copy"] == "ConversationConflict"
    assert tags["new over existing"] == "ConversationConflict"
    assert tags["stale delete"] == "ConversationConflict"
    assert tags["a deleted"] is None
