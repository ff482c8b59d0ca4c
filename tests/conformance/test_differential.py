"""The same calls give the same answers on memory:// and on SQLite, Redis and PostgreSQL.

Hypothesis draws programs of public-API calls, rich in edge values: integers up to and past
2**63 for ``after``/``limit``/``last``/versions/event cursors, NaN and infinity, NUL and lone
surrogates, values at and one past the size limits, JSON nested past the depth limit, crafted
list cursors, leases of NaN/infinity/1e300. Each program runs on a fresh memory store and on a
fresh store of the backend under test (its own file, prefix or schema), both on one
``ManualClock`` that moves forward before every call, so no two changes share a time. Every
answer (a value, or the type of the error raised) must be the same once the backend's ids are
mapped to memory's.

The memory backend is the reference here because it is the plainest I/O around the shared
verdicts (``_rules.decide``); ``test_stateful`` checks all of them against an independent model.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

import threadkeep
from tests._servers import cleanup_url
from tests._stores import store_factory

BIG = (2**63 - 1, 2**63, 10**30)
INTS = st.sampled_from((0, 1, 2, 3, 2**63 - 1, 1000, 1001, -1, True, 2**63, 10**30))
OPTIONAL_INTS = st.none() | INTS
KEEP_EVENTS = 12  # below 20, SQLite trims its log exactly (in steps of a tenth of this)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


CONTENTS = st.sampled_from(
    ("hi", "nul \x00 byte", "lone \ud800", "Olá 👋", "  ", "x" * 65536, "x" * 65537)
)
#: "b" * 16376 makes {"b":"…"} exactly 16 KiB of JSON, the default metadata limit.
METADATA = st.sampled_from(
    (
        None,
        {},
        {"src": "wa", "n": 1.5},
        {"s": "\ud800"},
        {"\udfff": 1},
        {"nan": math.nan},
        {"inf": -math.inf},
        _nested(64),
        _nested(65),
        {"b": "x" * 16376},
        {"b": "x" * 16377},
        {"1": "nul \x00"},
    )
)
STATES = st.sampled_from(
    (
        {"n": 1},
        {"n": math.nan},
        [math.inf],
        {"s": "\ud800"},
        None,
        "text",
        {"deep": _nested(200)},
        {"list": [1, 2, {"x": None}]},
    )
)
FACT_VALUES = st.sampled_from((1, "v", None, [1, {"a": None}], math.nan, "\ud800", _nested(65)))
LEASES = st.sampled_from(
    (30.0, 0.5, 0, -1, math.nan, math.inf, 1e300, timedelta(seconds=5), 365 * 86400, 3e7 + 1)
)
EVENT_CURSORS = st.none() | st.sampled_from(
    (
        "0",
        "1",
        "3",
        "12-0",
        "99",
        str(2**63 - 1),
        str(2**63),
        "1" + "0" * 30,
        "²",
        "-1",
        "1-1",
        "",
        "last",
    )
)
TIMEOUTS = st.sampled_from((0, 0.0, math.nan, math.inf, -1, None))


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


PAGE_CURSORS = st.none() | st.sampled_from(
    (
        "next",
        _b64([2**63, "zz"]),
        _b64([2**63 - 1, "zz"]),
        _b64([True, "zz"]),
        _b64([1, "\ud800"]),
        _b64([1, "a\x00"]),
        _b64("[" * 100),
        "[" * 300,
        "not base64!",
    )
)
#: How far the clock moves before a call: a little, so no two changes share a time.
STEPS = st.sampled_from((timedelta(microseconds=1), timedelta(seconds=1)))
#: Big moves, taken by the ``advance`` rule: past idle times, short and default expiries.
JUMPS = st.sampled_from((timedelta(minutes=31), timedelta(hours=3), timedelta(days=8)))
RETENTIONS = {
    "default": None,
    "short": threadkeep.Retention(ttl=timedelta(hours=2), idle_after=timedelta(minutes=5)),
    "capped": threadkeep.Retention(max_messages=2, window=3),
    "forever": threadkeep.Retention(ttl=None),
}
HANDLE = st.integers(0, 15)
CONTACTS = st.sampled_from(("c0", "c1", "c\x00", "\ud800"))
KEYS = st.none() | st.sampled_from(("k0", "k1", "k2", "k3", "\ud800"))


class Differ:
    """Runs each call on both stores and compares the answers."""

    def __init__(self, memory: Any, other: Any) -> None:
        self.memory, self.other = memory, other
        self.ids: dict[str, str] = {}  # the other store's conversation id → memory's
        self.pairs: list[tuple[str, str]] = []  # (memory id, other id), in creation order
        self.cursors: tuple[str | None, str | None] = (None, None)  # last next_cursor of each
        self.last_event: str | None = None

    def ids_of(self, i: int) -> tuple[str, str]:
        """A conversation of the program (or an unknown id one time in eight)."""
        if not self.pairs or i % 16 == 15:
            return "unknown", "unknown"
        return self.pairs[i % len(self.pairs)]

    def norm(self, value: Any) -> Any:
        """The answer with the other store's ids mapped to memory's; errors by type and field."""
        if isinstance(value, threadkeep.ThreadkeepError):
            return type(value).__name__, getattr(value, "field", None)
        if isinstance(value, threadkeep.Conversation):
            return dataclasses.replace(value, id=self.ids.get(value.id, value.id)), value.created
        if isinstance(value, threadkeep.Message):
            cid = self.ids.get(value.conversation_id, value.conversation_id)
            return dataclasses.replace(value, conversation_id=cid), value.replayed
        if isinstance(value, threadkeep.Event):
            cid = self.ids.get(value.conversation_id, value.conversation_id)
            return dataclasses.replace(value, id=value.id.removesuffix("-0"), conversation_id=cid)
        if isinstance(value, threadkeep.ErasureReceipt):  # the stores differ, not the erasure
            ids = tuple(self.ids.get(c, c) for c in value.conversations)
            return dataclasses.replace(value, conversations=ids, backend="", store="")
        if isinstance(value, threadkeep.Page):
            return [self.norm(c) for c in value.items], value.next_cursor is None
        if isinstance(value, list | tuple):
            return [self.norm(v) for v in value]
        return value

    def both(self, call: Callable[[Any, int], Any]) -> tuple[Any, Any]:
        """Run ``call(store, side)`` on each store (side 0: memory); assert the same answers."""
        answers = []
        for side, store in enumerate((self.memory, self.other)):
            try:
                answers.append(call(store, side))
            except threadkeep.ThreadkeepError as exc:
                answers.append(exc)
        mem, other = answers
        if (
            isinstance(mem, threadkeep.Conversation)
            and isinstance(other, threadkeep.Conversation)
            and mem.created
            and other.created
            and other.id not in self.ids
        ):
            self.ids[other.id] = mem.id
            self.pairs.append((mem.id, other.id))
        want, got = self.norm(mem), self.norm(other)
        assert got == want, (want, got)
        return mem, other


def _start(store: Any, side: int, contact: str, retention: Any) -> Any:
    return store.start(contact, tenant="t", retention=retention)


def _append(store: Any, side: int, ids: tuple[str, str], n: int) -> Any:
    return store.append(ids[side], "user", f"m{n}", idempotency_key=f"k{n}")


class Program(RuleBasedStateMachine):
    """Random calls, each checked on both stores at once."""

    def __init__(self, open_pair: Callable[[], tuple[Any, Any, threadkeep.ManualClock]]) -> None:
        super().__init__()
        self.open_pair = open_pair
        self.d: Differ
        self.clock: threadkeep.ManualClock

    @initialize()
    def open_stores(self) -> None:
        memory, other, self.clock = self.open_pair()
        self.d = Differ(memory, other)
        for contact, retention in (("c0", None), ("c1", RETENTIONS["capped"])):
            self.step(timedelta(seconds=1))
            self.d.both(partial(_start, contact=contact, retention=retention))
            for n in range(3):
                self.step(timedelta(seconds=1))
                self.d.both(partial(_append, ids=self.d.pairs[-1], n=n))

    def step(self, how: timedelta) -> None:
        self.clock.advance(how)

    @rule(
        how=STEPS,
        contact=CONTACTS,
        resume=st.booleans(),
        retention=st.sampled_from(sorted(RETENTIONS)),
        metadata=METADATA,
        stage=st.sampled_from((None, "Q0", "Q1")),
    )
    def start(
        self,
        how: timedelta,
        contact: str,
        resume: bool,
        retention: str,
        metadata: Any,
        stage: str | None,
    ) -> None:
        self.step(how)
        kwargs = {"tenant": "t", "metadata": metadata, "stage": stage}
        kwargs["retention"] = RETENTIONS[retention]
        self.d.both(lambda s, _: (s.resume if resume else s.start)(contact, **kwargs))

    @rule(how=STEPS, i=HANDLE, content=CONTENTS, metadata=METADATA, key=KEYS, tenant=st.booleans())
    def append(
        self, how: timedelta, i: int, content: str, metadata: Any, key: str | None, tenant: bool
    ) -> None:
        self.step(how)
        ids = self.d.ids_of(i)
        where = {"tenant": "t"} if tenant else {}
        self.d.both(
            lambda s, side: s.append(
                ids[side], "user", content, metadata=metadata, idempotency_key=key, **where
            )
        )

    @rule(i=HANDLE, last=INTS)
    def read_last(self, i: int, last: Any) -> None:
        ids = self.d.ids_of(i)
        self.d.both(lambda s, side: s.messages(ids[side], last=last))
        self.d.both(lambda s, side: s.context(ids[side]))

    @rule(i=HANDLE, after=INTS, limit=OPTIONAL_INTS)
    def read_after(self, i: int, after: Any, limit: Any) -> None:
        ids = self.d.ids_of(i)
        self.d.both(lambda s, side: s.messages(ids[side], after=after, limit=limit))

    @rule(i=HANDLE, last=INTS, after=INTS, limit=OPTIONAL_INTS)
    def read_both_ways(self, i: int, last: Any, after: Any, limit: Any) -> None:
        ids = self.d.ids_of(i)
        self.d.both(lambda s, side: s.messages(ids[side], last=last, after=after, limit=limit))

    @rule(i=HANDLE, tenant=st.sampled_from((None, "t", "other")))
    def get(self, i: int, tenant: str | None) -> None:
        ids = self.d.ids_of(i)
        self.d.both(lambda s, side: s.get(ids[side], tenant=tenant))
        self.d.both(lambda s, _: s.find_open("c0", tenant="t"))

    @rule(
        how=STEPS,
        i=HANDLE,
        status=st.sampled_from(("active", "idle", "waiting_agent", "closed", "new", "bogus")),
        stage=st.sampled_from((None, "Q1", "Q2")),
    )
    def lifecycle(self, how: timedelta, i: int, status: str, stage: str | None) -> None:
        self.step(how)
        ids = self.d.ids_of(i)
        self.d.both(lambda s, side: s.set_status(ids[side], status))
        self.step(how)
        self.d.both(lambda s, side: s.set_stage(ids[side], stage))

    @rule(
        how=STEPS,
        i=HANDLE,
        retention=st.sampled_from(
            (
                threadkeep.Retention(),
                threadkeep.Retention(ttl=None),
                threadkeep.Retention(ttl=timedelta(hours=1), window=2),
            )
        ),
    )
    def retain(self, how: timedelta, i: int, retention: threadkeep.Retention) -> None:
        self.step(how)
        ids = self.d.ids_of(i)
        self.d.both(lambda s, side: s.set_retention(ids[side], retention))

    @rule(how=STEPS, i=HANDLE, agent=st.sampled_from((None, "dana", "", "x" * 257)))
    def assign(self, how: timedelta, i: int, agent: str | None) -> None:
        self.step(how)
        ids = self.d.ids_of(i)
        self.d.both(lambda s, side: s.assign(ids[side], agent))

    @rule(how=STEPS, i=HANDLE, state=STATES, expected=OPTIONAL_INTS, version=OPTIONAL_INTS)
    def state(self, how: timedelta, i: int, state: Any, expected: Any, version: Any) -> None:
        self.step(how)
        ids = self.d.ids_of(i)
        self.d.both(lambda s, side: s.save_state(ids[side], state, expected_version=expected))
        self.step(how)
        if version is not None:
            self.d.both(
                lambda s, side: s.rollback_state(ids[side], version, expected_version=expected)
            )
        self.d.both(lambda s, side: s.load_state(ids[side], version=version))

    @rule(
        status=st.sampled_from((None, "active", "closed")),
        stage=st.sampled_from((None, "Q1")),
        limit=INTS,
        cursor=PAGE_CURSORS,
    )
    def listing(self, status: str | None, stage: str | None, limit: Any, cursor: Any) -> None:
        cursors = self.d.cursors if cursor == "next" else (cursor, cursor)
        mem, other = self.d.both(
            lambda s, side: s.list(
                tenant="t", status=status, stage=stage, limit=limit, cursor=cursors[side]
            )
        )
        if isinstance(mem, threadkeep.Page):
            self.d.cursors = (mem.next_cursor, other.next_cursor)
        self.d.both(lambda s, _: s.counts(tenant="t"))

    @rule(how=STEPS, i=HANDLE, whole_contact=st.booleans(), contact=CONTACTS)
    def erase(self, how: timedelta, i: int, whole_contact: bool, contact: str) -> None:
        self.step(how)
        ids = self.d.ids_of(i)
        if whole_contact:
            self.d.both(lambda s, _: s.delete_contact(contact, tenant="t"))
        else:
            self.d.both(lambda s, side: s.delete(ids[side]))

    @rule(how=JUMPS, sweep=st.booleans(), dry_run=st.booleans())
    def advance(self, how: timedelta, sweep: bool, dry_run: bool) -> None:
        self.step(how)
        if sweep:
            self.d.both(lambda s, _: s.sweep(dry_run=dry_run))

    @rule(i=st.integers(0, 1), n=st.integers(0, 2), how=STEPS)
    def replay(self, i: int, n: int, how: timedelta) -> None:
        """A late retry of one of the first messages (max_messages trimmed some on c1)."""
        self.step(how)
        self.d.both(partial(_append, ids=self.d.pairs[i], n=n))

    @rule(after=EVENT_CURSORS, tenant=st.sampled_from((None, "t")), timeout=TIMEOUTS)
    def events(self, after: str | None, tenant: str | None, timeout: Any) -> None:
        cursor = self.d.last_event if after == "last" else after
        if timeout is None or (isinstance(timeout, float) and timeout == math.inf):
            timeout = math.nan  # never wait forever: both refuse NaN at once
        mem, _ = self.d.both(
            lambda s, _: list(s.events(after=cursor, tenant=tenant, timeout=timeout))
        )
        if isinstance(mem, list) and mem:
            self.d.last_event = mem[-1].id

    @rule(how=STEPS, i=HANDLE, lease=LEASES, nested=st.booleans(), content=CONTENTS)
    def turn(self, how: timedelta, i: int, lease: Any, nested: bool, content: str) -> None:
        self.step(how)
        ids = self.d.ids_of(i)

        def answer(store: Any, side: int) -> Any:
            with store.turn(ids[side], lease=lease, timeout=0) as turn:
                if nested:
                    with store.turn(ids[side], timeout=0):
                        pass
                return turn.append("assistant", content)

        self.d.both(answer)

    @rule(
        how=STEPS,
        contact=CONTACTS,
        key=st.sampled_from(("name", "\ud800", "x" * 129)),
        value=FACT_VALUES,
        tier=st.sampled_from(("low", "critical", "forever")),
    )
    def memory(self, how: timedelta, contact: str, key: str, value: Any, tier: str) -> None:
        self.step(how)
        self.d.both(lambda s, _: s.remember(contact, key, value, tenant="t", tier=tier))
        self.d.both(lambda s, _: s.recall(contact, tenant="t"))


def _variant(url: str, n: int) -> str:
    """Another store like ``url``: its file, prefix or schema with ``n`` appended."""
    if url.startswith("sqlite:"):
        return url.removesuffix(".db") + f"-{n}.db"
    return f"{url}{'-' if url.startswith('redis') else '_'}{n}"


@pytest.fixture
def open_pair(api: str, own_store_url: str) -> Iterator[Callable[[], tuple[Any, Any, Any]]]:
    """Open a fresh memory store and a fresh store of the backend under test per example."""
    limits = threadkeep.Limits(events_kept=KEEP_EVENTS)
    urls: list[str] = []
    with ExitStack() as stack:

        def fresh() -> tuple[Any, Any, Any]:
            url = _variant(own_store_url, len(urls))
            urls.append(url)
            clock = threadkeep.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
            memory = stack.enter_context(store_factory(api, "memory://", clock))
            other = stack.enter_context(store_factory(api, url, clock))
            return memory(limits=limits), other(limits=limits), clock

        yield fresh
    for url in urls:
        cleanup_url(url)


#: A failure is reported as found; to shrink it, run with THREADKEEP_SHRINK=1 and --timeout=0
#: (see test_stateful).
SHRINK = os.environ.get("THREADKEEP_SHRINK") == "1"


def test_same_answers_as_memory(open_pair: Callable[[], Any]) -> None:
    """Programs of calls per backend × API, compared call by call with memory://."""
    run_state_machine_as_test(
        cast(type[Program], lambda: Program(open_pair)),
        settings=settings(
            max_examples=12,
            stateful_step_count=40,
            deadline=None,
            phases=list(Phase) if SHRINK else [Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=list(HealthCheck),
        ),
    )
