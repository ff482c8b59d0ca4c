"""Every plan of ``_rules.plans``: the op it builds, and each input it refuses before any I/O."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from threadkeep import DEFAULT_LIMITS, DEFAULT_RETENTION, InvalidInput, Limits, Retention
from threadkeep._rules import lifecycle, plans
from threadkeep._rules.ops import (
    AppendOp,
    DeleteOp,
    EventsOp,
    LeaseOp,
    ListOp,
    LoadStateOp,
    ReadOp,
    SaveStateOp,
    UpdateOp,
)
from threadkeep._rules.retention import RetentionUs

NOW = 1_767_225_600_000_000  # 2026-01-01, µs
LIMITS = Limits(max_content_bytes=10, max_metadata_bytes=40, max_page=5, events_kept=7)
OPEN = ("active", "idle", "new", "waiting_agent")


def test_start_stamps_the_time_and_slides_from_it() -> None:
    op = plans.start(
        NOW, LIMITS, Retention(ttl=timedelta(hours=1), window=3, max_messages=9), "c1",
        tenant="t", agent_id="bot", channel="web", stage="Q0", metadata={"a": 1}, resume=True,
    )  # fmt: skip
    row = op.row
    assert (op.resume, op.open_statuses, op.events_kept) == (True, OPEN, 7)
    assert (row.tenant, row.contact_id, row.agent_id, row.channel, row.stage) == (
        "t", "c1", "bot", "web", "Q0"
    )  # fmt: skip
    assert (row.status, row.metadata_json, row.message_count, row.last_seq) == (
        "new",
        '{"a":1}',
        0,
        0,
    )
    assert (row.created_us, row.activity_us) == (NOW, NOW)
    assert row.expires_us == NOW + 3_600_000_000
    assert row.idle_us == NOW + 30 * 60_000_000
    assert row.retention == RetentionUs(3_600_000_000, 1_800_000_000, 3, 9)


def test_start_ids_sort_by_the_stores_clock() -> None:
    def make(now: int) -> str:
        op = plans.start(
            now, LIMITS, DEFAULT_RETENTION, "c", tenant="t", agent_id=None, channel=None,
            stage=None, metadata=None, resume=False,
        )  # fmt: skip
        return op.row.id

    ids = [make(NOW + n * 1000) for n in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert all(len(i) == 26 for i in ids)


def test_start_with_an_id_keeps_it_and_checks_it() -> None:
    kwargs: dict[str, Any] = {"tenant": "t", "agent_id": None, "channel": None, "stage": None}
    kwargs.update(metadata=None, resume=False)
    op = plans.start(NOW, LIMITS, DEFAULT_RETENTION, "c", conversation_id="imported-1", **kwargs)
    assert op.row.id == "imported-1"
    with pytest.raises(InvalidInput):
        plans.start(NOW, LIMITS, DEFAULT_RETENTION, "c", conversation_id="../x", **kwargs)


@pytest.mark.parametrize(
    "field, value",
    [
        ("contact_id", ""),
        ("contact_id", "a\x00"),
        ("tenant", " "),
        ("agent_id", 3),
        ("channel", "x" * 65),
        ("stage", "x" * 129),
        ("metadata", {"k": "x" * 40}),
        ("metadata", {1: "not a string key"}),
        ("metadata", [1]),
    ],
)
def test_start_refuses(field: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"tenant": "t", "agent_id": None, "channel": None, "stage": None}
    kwargs.update(metadata=None, resume=False)
    contact = value if field == "contact_id" else "c"
    if field != "contact_id":
        kwargs[field] = value
    with pytest.raises(InvalidInput) as caught:
        plans.start(NOW, LIMITS, DEFAULT_RETENTION, contact, **kwargs)
    assert caught.value.field == field


def test_append_carries_the_lifecycle_table_and_the_fence() -> None:
    op = plans.append(
        NOW, LIMITS, "c1", "user", "hi", metadata=None, idempotency_key="k", tenant=None, fence=4
    )
    assert op == AppendOp(
        "c1", None, NOW, "user", "hi", "{}", "k", lifecycle.ON_MESSAGE_VALUES, 4, 7
    )


@pytest.mark.parametrize(
    "args, field",
    [
        (("c1", "bot", "hi"), "role"),
        (("c1", "user", ""), "content"),
        (("c1", "user", "x" * 11), "content"),
        (("c1", "user", "\ud800"), "content"),
        (("c 1", "user", "hi"), "conversation_id"),
    ],
)
def test_append_refuses(args: tuple[str, str, str], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        plans.append(NOW, LIMITS, *args, metadata=None, idempotency_key=None, tenant=None)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "last, after, limit, op",
    [
        (None, None, None, ReadOp("c", None, NOW, None, 0, 5)),
        # last reads one more: it tells whether the window may start at the first of the others
        (3, None, None, ReadOp("c", None, NOW, 4, 0, 5)),
        (6, None, None, ReadOp("c", None, NOW, 7, 0, 5)),  # any length, past max_page too
        (2**80, None, None, ReadOp("c", None, NOW, 2**63 - 1, 0, 5)),
        (None, 2**63 - 1, 1, ReadOp("c", None, NOW, None, 2**63 - 1, 1)),
    ],
)
def test_messages(last: Any, after: Any, limit: Any, op: ReadOp) -> None:
    got = plans.messages(NOW, LIMITS, "c", last=last, after=after, limit=limit, tenant=None)
    assert got == op


def test_messages_before() -> None:
    got = plans.messages(NOW, LIMITS, "c", last=None, after=None, limit=2, tenant=None, before=9)
    assert got == ReadOp("c", None, NOW, None, 0, 2, before=9)
    huge = plans.messages(NOW, LIMITS, "c", last=None, after=None, limit=2, tenant=None,
                          before=2**80)  # fmt: skip
    assert huge.before == 2**63 - 2  # past every seq: the newest
    bads: list[dict[str, Any]] = [
        {"before": -1},
        {"before": 3, "after": 1},
        {"before": 3, "last": 2},
    ]
    for bad in bads:
        with pytest.raises(InvalidInput):
            plans.messages(NOW, LIMITS, "c", **{"last": None, "after": None, "limit": None,
                                                "tenant": None, **bad})  # fmt: skip


@pytest.mark.parametrize(
    "last, after, limit, field",
    [
        (1, 0, None, "last"),
        (1, None, 2, "last"),
        (0, None, None, "last"),
        (True, None, None, "last"),
        (1.5, None, None, "last"),
        (None, -1, None, "after"),
        (None, 2**63, None, "after"),
        (None, True, None, "after"),
        (None, None, 0, "limit"),
        (None, None, 6, "limit"),
    ],
)
def test_messages_refuses(last: Any, after: Any, limit: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        plans.messages(NOW, LIMITS, "c", last=last, after=after, limit=limit, tenant=None)
    assert caught.value.field == field


def test_save_and_rollback_state() -> None:
    save = plans.save_state(NOW, LIMITS, "c", {"a": 1}, expected_version=0, tenant="t")
    assert save == SaveStateOp("c", "t", NOW, '{"a":1}', 0, None, 10, 7)
    back = plans.rollback_state(NOW, LIMITS, "c", 3, expected_version=None, tenant=None)
    assert back == SaveStateOp("c", None, NOW, "null", None, 3, 10, 7)
    assert plans.load_state(NOW, "c", 2, None) == LoadStateOp("c", None, NOW, 2)


@pytest.mark.parametrize("state", [{"a": math.nan}, [math.inf], {"s": "\ud800"}, object()])
def test_save_state_refuses(state: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        plans.save_state(NOW, LIMITS, "c", state, expected_version=None, tenant=None)
    assert caught.value.field == "state"


@pytest.mark.parametrize("bad", [-1, 2**63, 1.0, True])
def test_versions_refuse(bad: Any) -> None:
    with pytest.raises(InvalidInput):
        plans.save_state(NOW, LIMITS, "c", 1, expected_version=bad, tenant=None)
    with pytest.raises(InvalidInput):
        plans.rollback_state(NOW, LIMITS, "c", bad, expected_version=None, tenant=None)
    with pytest.raises(InvalidInput):
        plans.load_state(NOW, "c", bad, None)


@pytest.mark.parametrize("target", [s.value for s in lifecycle.Status])
def test_status_carries_where_it_may_come_from(target: str) -> None:
    op = plans.status(NOW, LIMITS, "c", target, None)
    assert op == UpdateOp(
        "c", None, NOW, "status", target, lifecycle.sources_for(lifecycle.Status(target)), 7
    )


def test_stage_may_change_in_open_statuses_only() -> None:
    assert plans.stage(NOW, LIMITS, "c", None, "t") == UpdateOp(
        "c", "t", NOW, "stage", None, OPEN, 7
    )
    with pytest.raises(InvalidInput):
        plans.stage(NOW, LIMITS, "c", "", None)


def test_list_decodes_its_cursor() -> None:
    page = plans.list_conversations(
        NOW, LIMITS, tenant="t", status="idle", stage=None, agent_id=None, contact_id="p",
        limit=2, cursor="WzEsInp6Il0",  # [1,"zz"]
    )  # fmt: skip
    assert page == ListOp("t", NOW, "idle", None, None, "p", 2, (1, "zz"))
    with pytest.raises(InvalidInput):
        plans.list_conversations(
            NOW, LIMITS, tenant="t", status="gone", stage=None, agent_id=None, contact_id=None,
            limit=2, cursor=None,
        )  # fmt: skip


def test_the_other_plans() -> None:
    assert plans.delete(NOW, LIMITS, "c", None) == DeleteOp("c", None, NOW, 7)
    contact = plans.delete_contact(NOW, LIMITS, "p", "t")
    assert (contact.tenant, contact.contact_id, contact.events_kept) == ("t", "p", 7)
    truthy: Any = 1
    sweep = plans.sweep(NOW, LIMITS, truthy)
    assert (sweep.dry_run, sweep.idle_to, sweep.idle_from, sweep.batch) == (
        True, "idle", ("active",), plans.SWEEP_BATCH
    )  # fmt: skip
    fact = plans.remember(NOW, DEFAULT_LIMITS, "p", "k", [1], "t", "low")
    assert (fact.value_json, fact.tier, fact.expires_us) == ("[1]", "low", NOW + 86_400_000_000)
    with pytest.raises(InvalidInput):
        plans.remember(NOW, DEFAULT_LIMITS, "p", "k", 1, "t", "forever")
    assert plans.recall(NOW, "p", None, "t").key is None
    assert plans.counts(NOW, "t").tenant == "t"
    assert plans.get(NOW, "c", "t").tenant == "t"
    assert plans.find_open(NOW, "p", "t").open_statuses == OPEN
    assert plans.window(NOW, "c", None).conversation_id == "c"


@pytest.mark.parametrize(
    "lease, until",
    [(30, NOW + 30_000_000), (timedelta(milliseconds=1), NOW + 1000), (1e-9, NOW + 1)],
)
def test_lease(lease: Any, until: int) -> None:
    assert plans.lease(NOW, "c", None, lease) == LeaseOp("c", None, NOW, until)


@pytest.mark.parametrize("after, number", [(None, None), ("0", 0), ("12", 12), ("12-0", 12)])
def test_events(after: str | None, number: int | None) -> None:
    assert plans.events("t", after, 1.5) == EventsOp("t", number, plans.EVENT_BATCH, 1.5)
