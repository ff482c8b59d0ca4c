"""``decide.supersede`` and the source check of ``plans.remember``: the fact rule, without I/O."""

from __future__ import annotations

import json

import pytest

from threadkeep import DEFAULT_LIMITS, InvalidInput
from threadkeep._rules import decide, plans
from threadkeep._rules.ops import RememberOp
from threadkeep._rules.rows import FactRow

NOW = 1_767_225_600_000_000  # 2026-01-01, µs
HOUR = 3_600_000_000


def op(
    value: object, tier: str = "medium", at: int = NOW, source: dict[str, object] | None = None
) -> RememberOp:
    return plans.remember(at, DEFAULT_LIMITS, "p", "k", value, "t", tier, source)


def history(row: FactRow) -> list[tuple[object, str]]:
    return [(json.loads(h["value"]), h["source"]) for h in json.loads(row.history_json)]


def test_a_first_fact_has_no_history():
    row = decide.supersede(None, op(1, source={"kind": "crm"}))
    assert row == FactRow("k", "1", "medium", NOW, NOW + 7 * 24 * HOUR, '{"kind":"crm"}', "[]")


def test_the_same_value_refreshes_and_a_different_one_supersedes():
    first = decide.supersede(None, op(1, "low", source={"n": 1}))
    again = decide.supersede(first, op(1, "high", NOW + HOUR, {"n": 2}))
    assert (again.tier, again.updated_us, again.source_json, history(again)) == (
        "high", NOW + HOUR, '{"n":2}', []
    )  # fmt: skip
    changed = decide.supersede(again, op(2, at=NOW + 2 * HOUR))
    assert changed.value_json == "2" and changed.source_json == "null"
    [entry] = json.loads(changed.history_json)
    assert entry == {
        "value": "1",
        "tier": "high",
        "source": '{"n":2}',
        "updated_us": str(NOW + HOUR),
        "expires_us": str(again.expires_us),
    }


def test_expired_values_are_not_superseded_and_leave_history_by_their_own_time():
    low = decide.supersede(None, op("a", "low"))
    high = decide.supersede(low, op("b", "critical", NOW + HOUR))
    assert history(high) == [("a", "null")]
    later = NOW + 30 * HOUR  # "a" (low, 24 h) has run out; "b" has not
    assert history(decide.supersede(high, op("c", at=later))) == [("b", "null")]
    gone = decide.supersede(low, op("z", at=NOW + 25 * HOUR))  # "a" itself expired: no entry
    assert history(gone) == []


def test_history_keeps_the_newest_only():
    row = None
    for i in range(decide.HISTORY_KEPT + 5):
        row = decide.supersede(row, op(i, at=NOW + i))
    assert row is not None
    assert row.value_json == "24"  # the current value; the history holds the 20 before it
    assert [v for v, _ in history(row)] == list(range(23, 3, -1))


@pytest.mark.parametrize("source", [[1], "crm", {1: "x"}, {"x": float("nan")}, {"x": "y" * 99}])
def test_a_bad_source_is_refused(source):
    with pytest.raises(InvalidInput) as info:
        plans.remember(
            NOW, DEFAULT_LIMITS.__class__(max_metadata_bytes=64), "p", "k", 1, "t", "low", source
        )
    assert info.value.field == "source"


def test_a_fact_is_due_for_sweeping_once_its_value_and_history_expired():
    long = decide.supersede(None, op(1, tier="critical"))
    short = decide.supersede(long, op(2, tier="low", at=NOW + HOUR))
    year = 365 * 24 * HOUR
    assert not decide.fact_due(short, NOW + 2 * HOUR)  # the value is live
    assert not decide.fact_due(short, NOW + 30 * HOUR)  # its value ran out, not its history
    assert decide.fact_due(short, NOW + year)  # both ran out
    assert decide.fact_due(decide.supersede(None, op(3, tier="low")), NOW + 25 * HOUR)
