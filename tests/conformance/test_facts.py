"""Contact memory with provenance and supersession, the same on every backend and API."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest

from threadkeep import InvalidInput

CRM = {"kind": "crm", "event": "ContactUpdate", "webhook_id": "w-1"}


def contact() -> str:
    return f"c-{uuid4()}"


def test_a_fact_says_who_set_it(store: Any) -> None:
    cid = contact()
    conv = store.start(cid)
    said = {"kind": "conversation", "conversation_id": conv.id, "message_seq": 3}
    fact = store.remember(cid, "budget", 450_000, tier="high", source=said)
    assert fact.source == said and fact.history == ()
    [read] = store.recall(cid, "budget")
    assert read.source == said and read.value == 450_000 and read.history == ()
    store.remember(cid, "plain", "x")
    assert store.recall(cid, "plain")[0].source is None


def test_a_newer_value_supersedes_and_the_old_one_is_kept(store: Any, clock: Any) -> None:
    cid = contact()
    store.remember(cid, "email", "a@example.com", tier="critical", source=CRM)
    first = store.recall(cid, "email")[0]
    clock.advance(timedelta(hours=1))
    store.remember(cid, "email", "a@example.com", tier="critical", source={"kind": "agent"})
    same = store.recall(cid, "email")[0]
    assert same.history == () and same.source == {"kind": "agent"}  # the same value: refreshed
    assert same.updated_at == first.updated_at + timedelta(hours=1)
    clock.advance(timedelta(hours=1))
    fact = store.remember(cid, "email", "b@example.com", tier="low", source=CRM)
    assert fact.value == "b@example.com" and fact.tier == "low"
    [old] = fact.history
    assert (old.value, old.tier, old.source) == ("a@example.com", "critical", {"kind": "agent"})
    assert old.updated_at == same.updated_at and old.expires_at == same.expires_at
    clock.advance(timedelta(hours=1))
    store.remember(cid, "email", {"work": "c@example.com"}, tier="medium")
    [read] = store.recall(cid, "email")
    assert read.value == {"work": "c@example.com"} and read.source is None
    assert [h.value for h in read.history] == ["b@example.com", "a@example.com"]  # newest first
    assert read.history[0].source == CRM


def test_history_is_kept_for_each_versions_tier(store: Any, clock: Any) -> None:
    cid = contact()
    store.remember(cid, "mood", "calm", tier="low")  # kept 24 hours
    store.remember(cid, "mood", "busy", tier="critical")
    assert [h.value for h in store.recall(cid, "mood")[0].history] == ["calm"]
    clock.advance(timedelta(hours=25))
    [read] = store.recall(cid, "mood")
    assert read.value == "busy" and read.history == ()  # the low-tier version ran out
    store.remember(cid, "mood", "happy", tier="critical")
    assert [h.value for h in store.recall(cid, "mood")[0].history] == ["busy"]


def test_a_short_lived_value_does_not_take_a_long_lived_history_with_it(
    store: Any, clock: Any
) -> None:
    cid = contact()
    store.remember(cid, "price", 400_000, tier="critical")  # kept a year
    store.remember(cid, "price", 450_000, tier="low")  # kept a day
    clock.advance(timedelta(days=2))
    assert store.recall(cid, "price") == []  # the newest value ran out
    store.sweep()  # the history it superseded is kept for its own tier's time
    again = store.remember(cid, "price", 420_000, tier="high")
    assert [(h.value, h.tier) for h in again.history] == [(400_000, "critical")]
    clock.advance(timedelta(days=366))
    store.sweep()  # now everything of it has expired: the row goes
    assert store.recall(cid, "price") == []
    assert store.remember(cid, "price", 1, tier="low").history == ()


def test_a_forgotten_fact_leaves_no_current_value_in_its_history(store: Any, clock: Any) -> None:
    cid = contact()
    store.remember(cid, "plan", "a", tier="low")
    clock.advance(timedelta(hours=25))
    assert store.recall(cid, "plan") == []
    fact = store.remember(cid, "plan", "b", tier="low")
    assert fact.history == ()  # an expired value is not superseded: it was already gone


def test_history_is_bounded(store: Any) -> None:
    cid = contact()
    for i in range(25):
        store.remember(cid, "n", i)
    [read] = store.recall(cid, "n")
    assert read.value == 24 and [h.value for h in read.history] == list(range(23, 3, -1))


@pytest.mark.parametrize("source", [["crm"], "crm", {1: "x"}, {"bad": float("nan")}])
def test_a_bad_source_is_refused_and_writes_nothing(store: Any, source: Any) -> None:
    cid = contact()
    with pytest.raises(InvalidInput) as info:
        store.remember(cid, "k", 1, source=source)
    assert info.value.field == "source"
    assert store.recall(cid) == []


def test_erasure_takes_the_history_too(store: Any) -> None:
    cid = contact()
    store.remember(cid, "k", "secret-1")
    store.remember(cid, "k", "secret-2")
    store.delete_contact(cid)
    assert store.recall(cid) == []
    fact = store.remember(cid, "k", "new")
    assert fact.history == ()


def test_concurrent_first_remembers_lose_no_value(
    make_store: Callable[..., Any], store_url: str
) -> None:
    # four processes' worth of stores write a key no one has written yet, at once: whichever
    # value is last, every other one is in its history (nothing overwritten unseen)
    stores = (
        [make_store()] * 4 if store_url.startswith("memory") else [make_store() for _ in range(4)]
    )

    def write(s: Any, cid: str, n: int, start: threading.Barrier) -> None:
        start.wait(10)
        s.remember(cid, "budget", n, tier="high")

    for round_ in range(5):
        cid, start = contact(), threading.Barrier(4)
        threads = [
            threading.Thread(target=write, args=(s, cid, n, start)) for n, s in enumerate(stores)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        [fact] = stores[0].recall(cid, "budget")
        assert sorted([fact.value, *(h.value for h in fact.history)]) == [0, 1, 2, 3], round_
