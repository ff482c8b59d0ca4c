"""``_rules.builders.fast_builder``: the same frozen objects as the dataclasses' own __init__."""

from __future__ import annotations

import copy
import pickle
from dataclasses import (
    FrozenInstanceError,
    InitVar,
    asdict,
    astuple,
    dataclass,
    field,
    fields,
    replace,
)
from datetime import UTC, datetime
from typing import Any, get_type_hints

import pytest

from tests.core.test_decide import row
from threadkeep import EventKind, Status
from threadkeep._models import Conversation, Event, Message, StateSnapshot
from threadkeep._rules import outcomes
from threadkeep._rules.builders import fast_builder, slots_twin
from threadkeep._rules.ops import LoadStateOp, Op, ReadOp
from threadkeep._rules.retention import RetentionUs
from threadkeep._rules.rows import ConversationRow, MessageRow
from threadkeep._rules.times import to_us
from threadkeep.backends import _common

AT = datetime(2026, 11, 30, 19, 30, 1, 123456, tzinfo=UTC)

#: One instance of each class built fast in the package, made by its own constructor.
MADE: list[Any] = [
    Message("c1", 3, "user", "hi", AT, {"a": [1]}, "k", True, {"type": "x"}),
    Message("c1", 4, "assistant", "", AT, {}, None, False, None),
    Conversation(
        "c1", "t", "p", None, "web", Status.ACTIVE, "Q1", {"x": 1}, AT, AT, None, 2, 3, True
    ),
    Event("12-0", EventKind.MESSAGE_APPENDED, "t", "c1", {"seq": 3}, AT),
    row(),
    RetentionUs(None, 3600, 20, 500),
    # generic bases (no slots of their own): the twin takes them too
    ReadOp("c1", None, 10, 21, 0, 1000, None),
    LoadStateOp("c1", "t", 10, None),
    StateSnapshot({"a": [1]}, 3, AT),
    StateSnapshot(None, 0, None),
]


@pytest.mark.parametrize("made", MADE, ids=lambda m: type(m).__name__)
def test_a_built_object_is_the_one_the_constructor_makes(made: Any) -> None:
    cls = type(made)
    values = [getattr(made, f.name) for f in fields(cls)]
    built = fast_builder(cls)(*values)
    assert type(built) is cls
    assert built == made and repr(built) == repr(made) and astuple(built) == astuple(made)
    # fields that take no part in == (Message.replayed, Conversation.created) are kept too
    assert all(getattr(built, f.name) is getattr(made, f.name) for f in fields(cls))
    for twin in (pickle.loads(pickle.dumps(built)), copy.copy(built), copy.deepcopy(built)):
        assert type(twin) is cls and twin == made and repr(twin) == repr(made)
    first = fields(cls)[0].name
    assert getattr(replace(built, **{first: "other"}), first) == "other"
    with pytest.raises(FrozenInstanceError):
        setattr(built, first, "other")
    for instance in (built, made):  # no other attribute (slotted, frozen): as made, refused
        with pytest.raises((AttributeError, TypeError)):
            instance.extra = 1
    if not any(isinstance(v, dict) for v in values):  # a dict field makes it unhashable
        assert hash(built) == hash(made)


@pytest.mark.parametrize("replayed", [False, True])
def test_to_messages_builds_the_messages_the_constructor_makes(replayed: bool) -> None:
    # to_messages fills the slots in its own loop (no builder call, created_at inlined):
    # every part of Message's public contract is the constructor's
    messages = [m for m in MADE if type(m) is Message]
    rows = [
        MessageRow(
            m.conversation_id, m.seq, m.role, m.content, to_us(m.created_at),
            '{"a": [1]}' if m.metadata else "{}", m.idempotency_key,
            None if m.payload is None else '{"type": "x"}', 0,
        )
        for m in messages
    ]  # fmt: skip
    built = outcomes.to_messages(rows, replayed)
    assert [outcomes.to_message(r, replayed) for r in rows] == built
    hints = get_type_hints(Message)
    for made, got in zip(messages, built, strict=True):
        made = replace(made, replayed=replayed)
        assert type(got) is Message and got == made and repr(got) == repr(made)
        assert [f.name for f in fields(got)] == [f.name for f in fields(made)] == list(hints)
        assert all(getattr(got, f.name) == getattr(made, f.name) for f in fields(Message))
        assert got.replayed is replayed and got.created_at.tzinfo is UTC
        assert asdict(got) == asdict(made) and astuple(got) == astuple(made)
        assert got.to_dict() == made.to_dict() and got.delivery == made.delivery
        assert replace(got, seq=9) == replace(made, seq=9)
        for twin in (pickle.loads(pickle.dumps(got)), copy.copy(got), copy.deepcopy(got)):
            assert type(twin) is Message and twin == made and repr(twin) == repr(made)
        with pytest.raises(FrozenInstanceError):
            got.seq = 5  # type: ignore[misc]
        with pytest.raises((AttributeError, TypeError)):
            got.extra = 1  # type: ignore[attr-defined]
        with pytest.raises(TypeError):  # a dict field: unhashable, as the constructor's
            hash(got)
        plain: dict[str, Any] = {"metadata": None, "payload": None}  # hashable otherwise
        assert hash(replace(got, **plain)) == hash(replace(made, **plain))


def test_slots_twin_is_a_plain_class_with_the_very_slots() -> None:
    twin = slots_twin(Message)
    assert twin.__slots__ == tuple(f.name for f in fields(Message))  # type: ignore[attr-defined]
    assert Message not in twin.__mro__ and twin.__mro__[1:] == (object,)


def test_a_twin_has_the_bases_of_its_class() -> None:
    # ReadOp's base is Op[...] (a Generic): a twin without it would have another layout
    twin = slots_twin(ReadOp)
    assert twin.__bases__ == ReadOp.__bases__ == (Op,) and issubclass(twin, Op)
    assert slots_twin(StateSnapshot).__bases__ == StateSnapshot.__bases__


def test_a_builder_takes_every_field_positionally() -> None:
    build = fast_builder(RetentionUs)
    with pytest.raises(TypeError):
        build(None, 3600, 20)
    with pytest.raises(TypeError):
        build(ttl_us=None, idle_after_us=3600, window=20, max_messages=None)


def test_decode_conversation_builds_the_row_the_constructor_makes() -> None:
    made = row(agent_id="a", channel="web", expires_us=None)
    retention = made.retention
    flat = (
        *astuple(made)[:15],
        retention.ttl_us, retention.idle_after_us, retention.window, retention.max_messages,
        "an extra column",
    )  # fmt: skip
    decoded = _common.decode_conversation(flat)
    assert type(decoded) is ConversationRow and type(decoded.retention) is RetentionUs
    assert decoded == made and repr(decoded) == repr(made)


@dataclass(frozen=True)
class _NoSlots:
    a: int


@dataclass(frozen=True, slots=True)
class _PostInit:
    a: int

    def __post_init__(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _NotInInit:
    a: int
    b: list[int] = field(default_factory=list, init=False)


@dataclass(frozen=True, slots=True)
class _WithInitVar:
    a: int
    b: InitVar[int]


@dataclass(frozen=True, slots=True)
class _Base:
    a: int


@dataclass(frozen=True, slots=True)
class _Derived(_Base):
    b: int


class _InitBase:
    __slots__ = ()

    def __init__(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _BaseWithInit(_InitBase):
    a: int


class _SetattrBase:
    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)


@dataclass(frozen=True, slots=True)
class _BaseWithSetattr(_SetattrBase):
    a: int


@dataclass(frozen=True, slots=True)
class _OwnName:
    _self: int


class _Plain:
    __slots__ = ("a",)


@dataclass(frozen=True, slots=True, init=False)
class _OwnInitChanges:
    a: int

    def __init__(self, a: int) -> None:
        object.__setattr__(self, "a", a * 2)


@dataclass(frozen=True, slots=True, init=False)
class _OwnInitChecks:
    a: int

    def __init__(self, a: int) -> None:
        if not isinstance(a, int):
            raise ValueError("a must be an int")
        object.__setattr__(self, "a", a)


@pytest.mark.parametrize(
    "cls",
    [
        _NoSlots, _PostInit, _NotInInit, _WithInitVar, _Derived, _OwnName, _Plain, int,
        _OwnInitChanges, _OwnInitChecks, _BaseWithInit, _BaseWithSetattr,
    ],
)  # fmt: skip
def test_a_class_whose_init_does_more_than_store_its_fields_is_refused(cls: type) -> None:
    with pytest.raises(TypeError):
        fast_builder(cls)
    with pytest.raises(TypeError):
        slots_twin(cls)
