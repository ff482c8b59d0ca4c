"""Random operation sequences against each backend, checked against a plain model after every step.

The model in this file is written from DESIGN.md ("Concepts", "Python API", "Guarantees"), the
public docstrings of ``Store`` and the lifecycle table pinned in ``tests/core``, with dicts and
lists only: it imports nothing from threadkeep's rules or backends, so it is an independent check
of both. It leaves no outcome open: where the contract reads two ways, the model takes the one the
rules decide (marked ``PINNED`` below), so two backends cannot differ there unnoticed.

Isolation. Every Hypothesis example opens its own store on its own ``ManualClock`` and works in
a fresh tenant, so ``list()`` and ``counts()`` see only that example's conversations. ``sweep()``
has no tenant: it works on everything under the run's Redis prefix / PostgreSQL schema / SQLite
file. So that its report can be compared exactly, every example's clock starts at ``START`` (in
2024), before any time the rest of the suite uses (the ``clock`` fixture starts on 2026-01-01;
other tests use the wall clock or days around it), and an example's data is erased when it ends
(``teardown``). A sweep at 2024 times touches no other test's conversations, and no other
test's sweep meets ours.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, cast
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, Phase, event, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.core.test_lifecycle import EXPECTED_ON_MESSAGE, EXPECTED_TRANSITIONS
from threadkeep import (
    Conversation,
    ConversationClosed,
    ConversationNotFound,
    IllegalTransition,
    InvalidInput,
    Limits,
    ManualClock,
    Message,
    Retention,
    StateConflict,
    Status,
    ThreadkeepError,
)

#: Shrinking a failure replays thousands of programs: over a minute on memory://, minutes on a
#: server, past pytest-timeout's 120 s, which would hide the failing program behind a timeout.
#: So a failure is reported as found (about 20 steps, printed in full); to shrink it, run with
#: THREADKEEP_SHRINK=1 and --timeout=0.
SHRINK = os.environ.get("THREADKEEP_SHRINK") == "1"
SETTINGS = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    phases=list(Phase) if SHRINK else [Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

START = datetime(2024, 1, 1, tzinfo=UTC)
KEEP_VERSIONS = 2  # Limits.state_versions_kept: small, so rollback meets trimmed versions
MAX_CONVERSATIONS = 6
CONTACTS = ("c0", "c1", "c2")
STATUSES = ("new", "active", "idle", "waiting_agent", "closed")
ROLES = ("user", "assistant", "agent", "system", "tool")
STAGES = (None, "Q0", "Q1", "Q2")
CONTENTS = (
    "Hi",
    "Olá 👋",
    "line 1\nline 2",
    "quote ' \" \\ %s",
    "  padded  ",
    '{"json": 1}',
    "nul \x00 byte",
)
CONV_METADATA: tuple[dict[str, Any] | None, ...] = (
    None,
    {},
    {"intent": "sell", "phone": "+351 900 000 000"},
    {"n": 1, "x": [None]},
)
MSG_METADATA = (None, {"src": "wa", "ok": True}, {"score": 0.25})
HANDLE = st.integers(0, 63)  # picks a conversation, see StoreVersusModel.pick
#: How far back from the next state version: 1 is the current one, K the oldest kept,
#: 0 one not saved yet, K + 1 one trimmed away (kept ones first: Hypothesis favours those).
BACK = st.sampled_from((1, KEEP_VERSIONS, 0, KEEP_VERSIONS + 1))
MESSAGE = st.tuples(
    st.sampled_from(ROLES), st.sampled_from(CONTENTS), st.sampled_from(MSG_METADATA)
)
STEPS = (  # besides these, the clock jumps to the next idle or expiry time (advance)
    timedelta(seconds=1),
    timedelta(minutes=4),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(days=1),
)

START_ARGS = st.fixed_dictionaries(
    {
        "contact": st.sampled_from(CONTACTS),
        "agent_id": st.sampled_from((None, "bot", "jorge")),
        "channel": st.sampled_from((None, "web", "sms")),
        "stage": st.sampled_from(STAGES),
        "metadata": st.sampled_from(CONV_METADATA),
        "retention": st.sampled_from(("store-default", "short", "forever", "capped")),
        "resume": st.booleans(),
    }
)

# ---- the model ----------------------------------------------------------------------------

OPEN = ("new", "active", "idle", "waiting_agent")

#: DESIGN.md "Lifecycle", pinned in tests/core: the explicit status changes allowed. Setting the
#: status a conversation already has changes nothing (set_status and close_conversation
#: docstrings). PINNED: escalating a new or an idle conversation to a human is allowed.
LEGAL = {(source, target) for source, targets in EXPECTED_TRANSITIONS.items() for target in targets}

#: What a message does to the status (DESIGN.md "Lifecycle" and "Handoff"): the first message
#: activates, a message wakes an idle conversation, waiting_agent stays waiting for the human.
ON_MESSAGE = EXPECTED_ON_MESSAGE
#: How often each idempotency key is drawn: few, so keys repeat within and across conversations.
KEYS = tuple(f"wamid.{n}" for n in range(4))


@dataclass(frozen=True)
class Keep:
    """A conversation's retention as the model understands it."""

    ttl: timedelta | None
    idle_after: timedelta
    window: int
    max_messages: int | None


#: name → (what start() is given, what the model expects). The store is opened with the
#: default retention: ttl 7 days (sliding), idle after 30 minutes, window 20 (DESIGN.md).
RETENTIONS: dict[str, tuple[Retention | None, Keep]] = {
    "store-default": (None, Keep(timedelta(days=7), timedelta(minutes=30), 20, None)),
    "short": (
        Retention(ttl=timedelta(hours=2), idle_after=timedelta(minutes=5), window=2),
        Keep(timedelta(hours=2), timedelta(minutes=5), 2, None),
    ),
    "forever": (Retention(ttl=None), Keep(None, timedelta(minutes=30), 20, None)),
    "capped": (
        Retention(max_messages=2, window=3),
        Keep(timedelta(days=7), timedelta(minutes=30), 3, 2),
    ),
}


@dataclass
class Model:
    """One conversation as the rules say it should be."""

    id: str  # the backend's id for this model handle
    contact: str
    agent_id: str | None
    channel: str | None
    stage: str | None
    metadata: dict[str, Any]
    keep: Keep
    created_at: datetime
    activity: datetime
    status: str = "new"
    last_seq: int = 0
    kept: list[Message] = field(default_factory=list)  # oldest first, at most max_messages
    by_key: dict[str, Message] = field(default_factory=dict)  # idempotency key → stored message
    versions: list[tuple[int, Any, datetime]] = field(default_factory=list)  # the last K kept
    state_version: int = 0
    erased: bool = False  # deleted (PINNED: expired ones are erased too) or purged by a sweep

    def expires_at(self) -> datetime | None:
        return None if self.keep.ttl is None else self.activity + self.keep.ttl

    def expired(self, now: datetime) -> bool:
        expires = self.expires_at()
        return expires is not None and expires <= now

    def live(self, now: datetime) -> bool:
        """Found by get(), listed, counted: not erased and not expired (expiry is exact)."""
        return not self.erased and not self.expired(now)

    def idle_due(self, now: datetime) -> bool:
        return self.status == "active" and self.activity + self.keep.idle_after <= now

    def conversation(self, tenant: str) -> Conversation:
        return Conversation(
            id=self.id,
            tenant=tenant,
            contact_id=self.contact,
            agent_id=self.agent_id,
            channel=self.channel,
            status=Status(self.status),
            stage=self.stage,
            metadata=self.metadata,
            created_at=self.created_at,
            last_activity_at=self.activity,
            expires_at=self.expires_at(),
            message_count=len(self.kept),
            state_version=self.state_version,
        )

    def save(self, version: int, value: Any, now: datetime) -> None:
        self.versions.append((version, copy.deepcopy(value), now))
        del self.versions[:-KEEP_VERSIONS]
        self.state_version = version
        self.activity = now  # a change is activity: sliding expiry renewed

    def kept_after(self, seq: int) -> list[Message]:
        return [x for x in self.kept if x.seq > seq]

    def kept_version(self, version: int) -> tuple[int, Any, datetime] | None:
        return next((v for v in self.versions if v[0] == version), None)


def state_value(n: int) -> dict[str, Any]:
    return {
        "n": n,
        "stage": f"Q{n % 5}",
        "price": n * 0.5,
        "tags": ["a", "b"][: n % 3],
        "nested": {"ok": n % 2 == 0, "none": None, "text": "Olá"},
    }


def attempt(label: str, call: Callable[[], Any]) -> Any:
    """Return what ``call`` returns, or the ThreadkeepError it raised; note it as an event.

    ``hypothesis.event`` labels let a coverage run count how often each path was taken.
    """
    result = outcome(call)
    event(f"{label}: {type(result).__name__ if isinstance(result, ThreadkeepError) else 'ok'}")
    return result


def outcome(call: Callable[[], Any]) -> Any:
    """Return what ``call`` returns, or the ThreadkeepError it raised."""
    try:
        return call()
    except ThreadkeepError as exc:
        return exc


def raised(result: Any, *allowed: type[ThreadkeepError]) -> None:
    names = " or ".join(e.__name__ for e in allowed)
    assert type(result) in allowed, f"expected {names}, got {result!r}"


def succeeded(result: Any) -> None:
    assert not isinstance(result, ThreadkeepError), f"expected success, got {result!r}"


# ---- the machine --------------------------------------------------------------------------


class StoreVersusModel(RuleBasedStateMachine):
    """Drive one store and the model with the same calls; compare them after every step."""

    def __init__(self, make_store: Callable[..., Any]) -> None:
        super().__init__()
        self.make_store = make_store
        self.store: Any = None
        self.clock = ManualClock(START)
        self.tenant = f"t-{uuid4().hex}"
        self.convs: list[Model] = []

    # Hypothesis switches rules off at random per example ("swarm testing"); starting the first
    # conversations, with a few messages, here means every example has some to work on even
    # when start or append is off.
    @initialize(
        first=st.lists(st.tuples(START_ARGS, st.lists(MESSAGE, max_size=3)), min_size=1, max_size=3)
    )
    def open_store(self, first: list[tuple[dict[str, Any], list[Any]]]) -> None:
        self.store = self.make_store(
            clock=self.clock, limits=Limits(state_versions_kept=KEEP_VERSIONS)
        )
        for args, messages in first:
            self.begin(**args)
            for role, content, metadata in messages:
                self.add_message(self.convs[-1], role, content, metadata, idem=None)

    def teardown(self) -> None:
        if self.store is None:
            return
        try:  # erase what this example made, so no other example or test meets it
            for contact in CONTACTS:
                self.store.delete_contact(contact, tenant=self.tenant)
            self.store.sweep()
        finally:
            self.store.close()

    # ---- helpers --------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def pick(self, i: int) -> Model:
        """Return a conversation: a live one three times in four, else one that is gone.

        Gone ones are those expired but not purged yet when there are some (the case DESIGN.md
        insists on: "not found … whether or not it has been physically purged yet").
        """
        now = self.now
        live = [m for m in self.convs if m.live(now)]
        expired = [m for m in self.convs if not m.erased and m.expired(now)]
        erased = [m for m in self.convs if m.erased]
        pool = (expired or erased or live) if i % 4 == 3 or not live else live
        return pool[i // 4 % len(pool)]

    def open_of(self, contact: str) -> list[Model]:
        return [
            m
            for m in self.convs
            if m.contact == contact and m.live(self.now) and m.status != "closed"
        ]

    def newest_open(self, contact: str) -> Model | None:
        """PINNED: of several open conversations, the one with the newest activity, then id."""
        return max(self.open_of(contact), key=lambda m: (m.activity, m.id), default=None)

    def has_conversations(self) -> bool:
        return bool(self.convs)

    # ---- starting -------------------------------------------------------------------------

    @precondition(lambda self: len(self.convs) < MAX_CONVERSATIONS)
    @rule(args=START_ARGS)
    def start(self, args: dict[str, Any]) -> None:
        self.begin(**args)

    def begin(
        self,
        contact: str,
        agent_id: str | None,
        channel: str | None,
        stage: str | None,
        metadata: dict[str, Any] | None,
        retention: str,
        resume: bool,
    ) -> None:
        """start() or resume() a conversation, and check it against the model."""
        given, keep = RETENTIONS[retention]
        kwargs: dict[str, Any] = {
            "tenant": self.tenant,
            "agent_id": agent_id,
            "channel": channel,
            "stage": stage,
            "metadata": metadata,
            "retention": given,
        }
        if resume:
            found = self.newest_open(contact)
            conv = self.store.resume(contact, **kwargs)
            if found is not None:
                assert conv == found.conversation(self.tenant)
                assert not conv.created
                event("resume: found the open one")
                return
        else:
            conv = self.store.start(contact, **kwargs)
        event("resume: started one" if resume else "start")
        assert conv.created
        assert conv.id not in {m.id for m in self.convs}, "a new conversation reused an id"
        model = Model(
            id=conv.id,
            contact=contact,
            agent_id=agent_id,
            channel=channel,
            stage=stage,
            metadata=dict(metadata or {}),
            keep=keep,
            created_at=self.now,
            activity=self.now,
        )
        self.convs.append(model)
        assert conv == model.conversation(self.tenant)

    # ---- messages -------------------------------------------------------------------------

    @precondition(has_conversations)
    @rule(i=HANDLE, msg=MESSAGE)
    def append(self, i: int, msg: tuple[str, str, dict[str, Any] | None]) -> None:
        role, content, metadata = msg
        self.add_message(self.pick(i), role, content, metadata, idem=None)

    @precondition(has_conversations)
    @rule(i=HANDLE, msg=MESSAGE, key=st.sampled_from(KEYS))
    def append_with_key(
        self, i: int, msg: tuple[str, str, dict[str, Any] | None], key: str
    ) -> None:
        # PINNED: a key's scope is its conversation; the same key elsewhere is a new message.
        role, content, metadata = msg
        self.add_message(self.pick(i), role, content, metadata, idem=key)

    @precondition(has_conversations)
    @rule(i=HANDLE, k=st.integers(0, 7))
    def replay(self, i: int, k: int) -> None:
        """A retried webhook: the same key and message again."""
        m = self.pick(i)
        # PINNED: a key replays its message even after max_messages trimmed it.
        keys = list(m.by_key)
        if keys:
            original = m.by_key[keys[k % len(keys)]]
            event("replay of a kept message")
            self.add_message(
                m, original.role, original.content, original.metadata, original.idempotency_key
            )

    def add_message(
        self,
        m: Model,
        role: str,
        content: str,
        metadata: dict[str, Any] | None,
        idem: str | None,
    ) -> None:
        now = self.now
        original = None if idem is None else m.by_key.get(idem)
        result = attempt(
            "append",
            lambda: self.store.append(
                m.id, role, content, metadata=metadata, idempotency_key=idem, tenant=self.tenant
            ),
        )
        if not m.live(now):
            raised(result, ConversationNotFound)
        elif original is not None:
            # DESIGN.md: a replayed message is stored once; the replay returns the stored one.
            # PINNED: also after the conversation was closed (the key is checked first).
            assert result == original
            assert result.replayed
        elif m.status == "closed":
            raised(result, ConversationClosed)
        else:
            succeeded(result)
            msg = Message(
                conversation_id=m.id,
                seq=m.last_seq + 1,
                role=role,
                content=content,
                created_at=now,
                metadata=dict(metadata or {}),
                idempotency_key=idem,
            )
            assert result == msg
            m.last_seq += 1
            m.kept.append(msg)
            if m.keep.max_messages is not None and len(m.kept) > m.keep.max_messages:
                event("max_messages trimmed the oldest")
                del m.kept[: -m.keep.max_messages]
            if idem is not None:
                m.by_key[idem] = msg
            m.status = ON_MESSAGE[m.status]
            m.activity = now

    @precondition(has_conversations)
    @rule(
        i=HANDLE,
        how=st.tuples(st.just("last"), st.integers(1, 4))
        | st.tuples(st.just("after"), st.sampled_from((1, 2, 0, 4, 6)), st.integers(1, 3))
        | st.tuples(st.just("version"), BACK),
    )
    def read(self, i: int, how: tuple[Any, ...]) -> None:
        """messages(last=), messages(after=, limit=) or load_state(version=)."""
        m = self.pick(i)
        if how[0] == "last":
            last = how[1]
            expected: Any = m.kept[-last:]
            call = lambda: self.store.messages(m.id, last=last, tenant=self.tenant)  # noqa: E731
        elif how[0] == "after":
            after, limit = how[1:]
            expected = m.kept_after(after)[:limit]
            call = lambda: self.store.messages(  # noqa: E731
                m.id, after=after, limit=limit, tenant=self.tenant
            )
        else:
            version = max(1, m.state_version + 1 - how[1])
            expected = m.kept_version(version)
            call = lambda: self.store.load_state(m.id, version=version, tenant=self.tenant)  # noqa: E731
        result = attempt(f"read {how[0]}", call)
        if not m.live(self.now):
            raised(result, ConversationNotFound)
        elif how[0] != "version":
            assert result == expected
        elif expected is None:
            raised(result, InvalidInput)  # load_state docstring: that version is not kept
        else:
            version, value, saved_at = expected
            assert (result.value, result.version, result.saved_at) == (value, version, saved_at)

    # ---- lifecycle ------------------------------------------------------------------------

    def change_status(self, m: Model, target: str, call: Callable[[], Any]) -> None:
        now, current = self.now, m.status
        result = attempt(f"status {current} -> {target}", call)
        if not m.live(now):
            raised(result, ConversationNotFound)
            return
        if target == current:
            pass  # no change, not even activity
        elif (current, target) in LEGAL:
            succeeded(result)
            m.status = target
            m.activity = now
        else:  # PINNED: leaving closed is an illegal transition too
            raised(result, IllegalTransition)
            return
        succeeded(result)
        assert result == m.conversation(self.tenant)

    @precondition(has_conversations)
    @rule(i=HANDLE, status=st.sampled_from(("next", *STATUSES, "close_conversation()")))
    def set_status(self, i: int, status: str) -> None:
        """set_status() to a given status, or to one the lifecycle allows next; or close."""
        m = self.pick(i)
        if status == "next":
            after = sorted(t for s, t in LEGAL if s == m.status) or ["closed"]
            status = after[i % len(after)]
        if status == "close_conversation()":
            self.change_status(
                m, "closed", lambda: self.store.close_conversation(m.id, tenant=self.tenant)
            )
        else:
            self.change_status(
                m, status, lambda: self.store.set_status(m.id, status, tenant=self.tenant)
            )

    @precondition(has_conversations)
    @rule(i=HANDLE, stage=st.sampled_from(STAGES))
    def set_stage(self, i: int, stage: str | None) -> None:
        m, now = self.pick(i), self.now
        result = attempt("set_stage", lambda: self.store.set_stage(m.id, stage, tenant=self.tenant))
        if not m.live(now):
            raised(result, ConversationNotFound)
            return
        if m.status == "closed":
            raised(result, ConversationClosed)  # Store.set_stage docstring
            return
        succeeded(result)
        if stage != m.stage:  # PINNED: setting the stage it already has changes nothing
            m.activity = now
        m.stage = stage
        assert result == m.conversation(self.tenant)

    # ---- state ----------------------------------------------------------------------------

    def expected_version(self, m: Model, how: str, off: int) -> int | None:
        if how == "none":
            return None
        if how == "current":
            return m.state_version
        return m.state_version - off if m.state_version >= off else m.state_version + off

    @precondition(has_conversations)
    @rule(
        i=HANDLE,
        n=st.integers(0, 20),
        how=st.sampled_from(("none", "current", "stale")),
        off=st.integers(1, 3),
    )
    def save_state(self, i: int, n: int, how: str, off: int) -> None:
        m, now = self.pick(i), self.now
        value = state_value(n)
        expected = self.expected_version(m, how, off)
        result = attempt(
            f"save_state expected={how}",
            lambda: self.store.save_state(
                m.id, value, expected_version=expected, tenant=self.tenant
            ),
        )
        if not m.live(now):
            raised(result, ConversationNotFound)
            return
        # PINNED: a closed conversation's state can still be saved.
        if expected is not None and expected != m.state_version:
            raised(result, StateConflict)
        else:
            assert result == m.state_version + 1
            m.save(result, value, now)

    @precondition(has_conversations)
    @rule(
        i=HANDLE,
        back=BACK,
        how=st.sampled_from(("none", "current", "stale")),
        off=st.integers(1, 3),
    )
    def rollback_state(self, i: int, back: int, how: str, off: int) -> None:
        m, now = self.pick(i), self.now
        to_version = max(0, m.state_version + 1 - back)
        expected = self.expected_version(m, how, off)
        result = attempt(
            f"rollback_state expected={how}",
            lambda: self.store.rollback_state(
                m.id, to_version, expected_version=expected, tenant=self.tenant
            ),
        )
        if not m.live(now):
            raised(result, ConversationNotFound)
            return
        stale = expected is not None and expected != m.state_version
        old = m.kept_version(to_version)
        if stale:  # PINNED: a stale expected version wins over a version not kept
            raised(result, StateConflict)
        elif old is None:
            raised(result, InvalidInput)  # rollback_state docstring: not kept
        else:
            assert result == m.state_version + 1
            m.save(result, old[1], now)

    # ---- erasure --------------------------------------------------------------------------

    @precondition(has_conversations)
    @rule(i=HANDLE, whole_contact=st.booleans())
    def erase(self, i: int, whole_contact: bool) -> None:
        """delete() one conversation, or delete_contact() every one of its contact."""
        m, now = self.pick(i), self.now
        if whole_contact:
            mine = [x for x in self.convs if x.contact == m.contact and not x.erased]
            receipt = self.store.delete_contact(m.contact, tenant=self.tenant)
            event(f"delete_contact: {min(receipt.live, 2)}+ erased")
            assert receipt.live == sum(x.live(now) for x in mine)  # "how many were live"
            assert set(receipt.conversations) <= {x.id for x in mine}
            assert {x.id for x in mine if x.live(now)} <= set(receipt.conversations)
            if all(x.live(now) for x in mine):  # nothing a server may have reclaimed itself
                oldest_first = sorted(mine, key=lambda x: (x.created_at, x.id))
                assert receipt.conversations == tuple(x.id for x in oldest_first)
                assert receipt.messages == sum(len(x.kept) for x in mine)
                assert receipt.states == sum(len(x.versions) for x in mine)
        else:
            mine = [m]
            result = attempt("delete", lambda: self.store.delete(m.id, tenant=self.tenant))
            if m.live(now):
                assert result is None
            else:
                raised(result, ConversationNotFound)  # "an expired conversation is gone"
        for x in mine:
            x.erased = True  # PINNED: an expired conversation is erased too

    # ---- time -----------------------------------------------------------------------------

    @rule(
        how=st.sampled_from(STEPS)
        | st.tuples(st.sampled_from(("expiry", "idle")), st.sampled_from((0, -1, 1))),
        then_sweep=st.booleans(),
    )
    def advance(self, how: timedelta | tuple[str, int], then_sweep: bool) -> None:
        """Move the clock by a step, or to 1 µs before, at or after the next idle/expiry time.

        Sweeping right after is its own rule too; doing both in one step makes the two meet
        more often.
        """
        if isinstance(how, timedelta):
            self.clock.advance(how)
        else:
            kind, offset_us = how
            now = self.now
            due = []
            for m in self.convs:
                if not m.live(now):
                    continue
                if kind == "idle" and m.status == "active":
                    due.append(m.activity + m.keep.idle_after)
                expires = m.expires_at()
                if kind == "expiry" and expires is not None:
                    due.append(expires)
            later = [d for d in due if d > now]
            if later:
                delta = min(later) - now + timedelta(microseconds=offset_us)
                if delta > timedelta(0):
                    event(f"clock to {kind} time {offset_us:+d} us")
                    self.clock.advance(delta)
        if then_sweep:
            self.sweep(dry_run=False)

    @rule(dry_run=st.booleans())
    def sweep(self, dry_run: bool) -> None:
        now = self.now
        expired = [m for m in self.convs if not m.erased and m.expired(now)]
        idle = [m for m in self.convs if m.live(now) and m.idle_due(now)]
        report = self.store.sweep(dry_run=dry_run)
        assert report.dry_run is dry_run
        assert report.idled == len(idle)
        assert report.purged == len(expired), (report, len(expired))
        assert report.facts_purged == 0
        event(f"sweep: idled {min(len(idle), 2)}+, purged {min(report.purged, 2)}+")
        if not dry_run:
            for m in expired:
                m.erased = True
            for m in idle:
                m.status = "idle"  # marking idle is not activity: times stay

    # ---- listing --------------------------------------------------------------------------

    @rule(
        status=st.none() | st.sampled_from(STATUSES),
        stage=st.none() | st.sampled_from(STAGES[1:]),
        agent_id=st.none() | st.sampled_from(("bot", "jorge")),
        contact=st.none() | st.sampled_from(CONTACTS),
        limit=st.integers(1, 4),
    )
    def list_filtered(
        self,
        status: str | None,
        stage: str | None,
        agent_id: str | None,
        contact: str | None,
        limit: int,
    ) -> None:
        expected = [
            m
            for m in self.convs
            if m.live(self.now)
            and status in (None, m.status)
            and stage in (None, m.stage)
            and agent_id in (None, m.agent_id)
            and contact in (None, m.contact)
        ]
        filters = {"status": status, "stage": stage, "agent_id": agent_id, "contact_id": contact}
        self.check_listing(expected, limit, filters)

    def check_listing(self, expected: list[Model], limit: int, filters: dict[str, Any]) -> None:
        seen: list[Conversation] = []
        cursor = None
        for _ in range(len(expected) + 2):
            page = self.store.list(tenant=self.tenant, limit=limit, cursor=cursor, **filters)
            assert len(page.items) <= limit
            seen.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        else:
            pytest.fail(f"list() did not end after {len(expected) + 2} pages of {limit}")
        # PINNED: newest activity first, then the greatest id.
        order = sorted(expected, key=lambda m: (m.activity, m.id), reverse=True)
        assert seen == [m.conversation(self.tenant) for m in order]

    # ---- the invariant --------------------------------------------------------------------

    @invariant()
    def store_agrees_with_model(self) -> None:
        if self.store is None:
            return
        now, store, tenant = self.now, self.store, self.tenant
        for m in self.convs:
            if m.live(now):
                assert store.get(m.id, tenant=tenant) == m.conversation(tenant)
                assert store.messages(m.id, tenant=tenant) == m.kept
                window = m.kept[-m.keep.window :]
                assert store.context(m.id, tenant=tenant) == [
                    {"role": x.role, "content": x.content} for x in window
                ]
                assert store.messages(m.id, after=1, limit=2, tenant=tenant) == m.kept_after(1)[:2]
                snap = store.load_state(m.id, tenant=tenant)
                version, value, saved_at = m.versions[-1] if m.versions else (0, None, None)
                assert (snap.value, snap.version, snap.saved_at) == (value, version, saved_at)
                for version, value, saved_at in m.versions:  # every kept version …
                    snap = store.load_state(m.id, version=version, tenant=tenant)
                    assert (snap.value, snap.version, snap.saved_at) == (value, version, saved_at)
                if m.state_version > KEEP_VERSIONS:  # … and not the one before them
                    trimmed = m.state_version - KEEP_VERSIONS
                    load = partial(store.load_state, m.id, version=trimmed, tenant=tenant)
                    raised(outcome(load), InvalidInput)
            else:
                raised(outcome(partial(store.get, m.id, tenant=tenant)), ConversationNotFound)
                raised(outcome(partial(store.messages, m.id, tenant=tenant)), ConversationNotFound)
                raised(
                    outcome(partial(store.load_state, m.id, tenant=tenant)), ConversationNotFound
                )
        live = [m for m in self.convs if m.live(now)]
        self.check_listing(live, 2, {})
        counts = store.counts(tenant=tenant)
        by_status: dict[str, int] = {}
        by_stage: dict[str, int] = {}
        for m in live:
            by_status[m.status] = by_status.get(m.status, 0) + 1
            if m.stage is not None:
                by_stage[m.stage] = by_stage.get(m.stage, 0) + 1
        assert counts.total == len(live)
        assert {k: v for k, v in counts.by_status.items() if v} == by_status
        assert {k: v for k, v in counts.by_stage.items() if v} == by_stage
        for contact in CONTACTS:
            newest = self.newest_open(contact)
            found = store.find_open(contact, tenant=tenant)
            assert found == (None if newest is None else newest.conversation(tenant))


@pytest.mark.slow
def test_random_operation_sequences_match_the_model(make_store: Callable[..., Any]) -> None:
    """Every backend × API, driven by the machine above."""
    run_state_machine_as_test(
        cast(type[StoreVersusModel], lambda: StoreVersusModel(make_store)), settings=SETTINGS
    )


def test_nul_in_content_round_trips(store: Any) -> None:
    """A NUL character is text like any other: stored and returned as given, on every backend.

    The Store accepts it (no InvalidInput), so every backend must keep it ("same results for the
    same calls on memory, SQLite, Redis and PostgreSQL"); PostgreSQL once answered BackendError.
    The machine's contents include it too; this checks it on every run, not by chance.
    """
    conv = store.start(f"c-{uuid4()}", tenant=f"t-{uuid4().hex}")
    msg = store.append(conv.id, "user", "a\x00b")
    assert msg.content == "a\x00b"
    assert store.messages(conv.id) == [msg]
