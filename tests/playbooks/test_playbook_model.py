"""Playbook files: the shipped ones, the criteria language, and clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import threadkeep
from threadkeep.playbooks import (
    SHIPPED,
    Criterion,
    PlaybookNotFound,
    PlaybookSet,
    get_playbook,
    load_playbook,
    parse_playbook,
)

REALTOR_STAGES = [
    "Lead Capture",
    "Initial Contact",
    "Qualification",
    "Needs Discovery",
    "Property Search",
    "Showing Prep",
    "Property Showing",
    "Offer Prep",
    "Negotiation",
    "Contract Execution",
    "Transaction Management",
    "Closing Prep",
    "Post-Close Follow-up",
]


def minimal(**stage_overrides: Any) -> dict[str, Any]:
    stage = {"id": "b", "name": "B", "objectives": ["x"], "replies": ["r1", "r2", "r3"]}
    return {"name": "mine", "stages": [{**stage, "id": "a", "name": "A", **stage_overrides}, stage]}


def test_realtor_has_the_thirteen_stages_with_full_content():
    book = get_playbook("realtor")
    assert [s.name for s in book.stages] == REALTOR_STAGES
    for stage in book.stages:
        assert stage.objectives and stage.success_metrics and stage.critical_actions, stage.id
        assert len(stage.key_questions) >= 3, stage.id
        assert len(stage.objections) >= 2, stage.id
        assert all(o.handling and o.reply for o in stage.objections), stage.id
        assert len(stage.replies) >= 3, stage.id
        if not stage.final:
            assert stage.transition.criteria, f"{stage.id} has no transition criteria"
    assert book.stages[-1].final and book.next_stage(book.stages[-1]) is None
    second = book.next_stage(book.stages[0])
    assert second is not None and second.id == "initial_contact"


def test_seller_stages_are_the_bots():
    book = get_playbook("seller")
    assert [s.id for s in book.stages] == ["Q0", "Q1", "Q2", "Q3", "Q4", "QUALIFIED", "STALLED"]
    q4, qualified, first = book.stage("Q4"), book.stage("QUALIFIED"), book.stage(None)
    assert q4 is not None and qualified is not None and first is not None
    after_q4 = book.next_stage(q4)
    assert after_q4 is not None and after_q4.id == "QUALIFIED"
    assert book.next_stage(qualified) is None
    assert first.id == "Q0" and book.stage("nope") is None


@pytest.mark.parametrize(
    ("text", "field", "op", "value"),
    [
        ("price is set", "price", "set", None),
        ("price  is   not set", "price", "unset", None),
        ("cash_ok is true", "cash_ok", "true", None),
        ("cash_ok is false", "cash_ok", "false", None),
        ("days <= 90", "days", "<=", 90),
        ("days>30", "days", ">", 30),
        ("days >= 1.5", "days", ">=", 1.5),
        ("days < 7", "days", "<", 7),
        ('intent == "buy"', "intent", "==", "buy"),
        ("intent != null", "intent", "!=", None),
        ('intent in ["buy", "both"]', "intent", "in", ["buy", "both"]),
        ('intent not in ["sell"]', "intent", "not in", ["sell"]),
        ("budget.max >= 100000", "budget.max", ">=", 100000),
    ],
)
def test_criteria_parse(text, field, op, value):
    c = Criterion.model_validate(text)
    assert (c.field, c.op, c.value) == (field, op, value)
    assert c.label == " ".join(text.split())


@pytest.mark.parametrize(
    ("text", "values", "met"),
    [
        ("p is set", {"p": 1}, True),
        ("p is set", {"p": 0}, True),
        ("p is set", {"p": False}, True),
        ("p is set", {"p": None}, False),
        ("p is set", {"p": ""}, False),
        ("p is set", {"p": []}, False),
        ("p is set", {}, False),
        ("p is not set", {}, True),
        ("p is not set", {"p": "x"}, False),
        ("p is true", {"p": True}, True),
        ("p is true", {"p": 1}, False),
        ("p is false", {"p": False}, True),
        ("p is false", {}, False),
        ("p <= 90", {"p": 90}, True),
        ("p <= 90", {"p": 91}, False),
        ("p <= 90", {"p": "10"}, False),
        ("p <= 90", {"p": True}, False),
        ("p <= 90", {}, False),
        ("p > 1", {"p": 2.5}, True),
        ("p < 1", {"p": 0}, True),
        ("p >= 1", {"p": 1}, True),
        ('p == "a"', {"p": "a"}, True),
        ('p == "a"', {"p": "b"}, False),
        ('p != "a"', {"p": "b"}, True),
        ('p != "a"', {}, False),
        ('p in ["a", "b"]', {"p": "b"}, True),
        ('p in ["a", "b"]', {"p": "c"}, False),
        ('p not in ["a"]', {"p": "c"}, True),
        ("a.b is set", {"a": {"b": 1}}, True),
        ("a.b is set", {"a": 3}, False),
    ],
)
def test_criteria_met(text, values, met):
    assert Criterion.model_validate(text).met(values) is met


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("price", "is not a criterion"),
        ("price is maybe", "is not a criterion"),
        ("price is not true", "write 'is false'"),
        ("days <= soon", "is not JSON"),
        ('days <= "9"', "needs a number"),
        ('intent in "buy"', "needs a JSON list"),
    ],
)
def test_bad_criteria_name_the_field(text, says):
    data = minimal(transition={"criteria": ["x is set", text]})
    with pytest.raises(threadkeep.InvalidInput) as info:
        parse_playbook(data, source="mine.yaml")
    assert info.value.field == "stages[0].transition.criteria[1]"
    assert says in str(info.value) and "mine.yaml" in str(info.value)


def test_criteria_joined_with_and_are_split():
    data = minimal(transition={"criteria": 'a is set and b == "x and y" and c <= 3'})
    book = parse_playbook(data)
    assert [c.when for c in book.stages[0].transition.criteria] == [
        "a is set",
        'b == "x and y"',
        "c <= 3",
    ]


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        ({"name": "x", "stages": []}, "stages", "at least 1"),
        ({"stages": minimal()["stages"]}, "name", "Field required"),
        (minimal(objectives=[]), "stages[0].objectives", "at least 1"),
        (minimal(replies=["one"]), "stages[0].replies", "at least 3"),
        (minimal(colour="red"), "stages[0].colour", "Extra inputs"),
        (minimal(key_questions=[{"field": "x"}]), "stages[0].key_questions[0].ask", "required"),
        (
            minimal(objections=[{"id": "o", "triggers": [], "handling": "h"}]),
            "stages[0].objections[0].triggers",
            "at least 1",
        ),
        (minimal(transition={"to": "zz"}), "stages[0].transition.to", "'zz' is not a stage"),
    ],
)
def test_bad_playbooks_name_the_field(data, field, says):
    with pytest.raises(threadkeep.InvalidInput) as info:
        parse_playbook(data)
    assert field in str(info.value) and says in str(info.value)


def test_declared_fields_are_enforced():
    data = minimal(transition={"criteria": ["price is set"]})
    data["fields"] = [{"name": "budget"}]
    with pytest.raises(threadkeep.InvalidInput) as info:
        parse_playbook(data, source="mine.yaml")
    assert info.value.field == "stages[0].transition.criteria[0]"
    assert str(info.value) == (
        "mine.yaml: stages[0].transition.criteria[0]: field 'price' is not declared in the "
        "playbook's fields (budget)"
    )
    data["stages"][0]["transition"] = {"criteria": ["conversation.colour is set"]}
    with pytest.raises(threadkeep.InvalidInput, match="not a conversation field"):
        parse_playbook(data)
    data["stages"][0]["transition"] = {"criteria": ["conversation.message_count >= 1"]}
    data["stages"][0]["key_questions"] = [{"ask": "Budget?", "field": "budget"}]
    assert parse_playbook(data).stages[0].key_questions[0].field == "budget"


def test_duplicate_stage_ids_are_refused():
    data = minimal()
    data["stages"][1]["id"] = "a"
    with pytest.raises(threadkeep.InvalidInput, match="stage id 'a' is used twice"):
        parse_playbook(data)


def test_json_and_yaml_files(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(minimal()))
    assert load_playbook(path).name == "mine"
    assert get_playbook(str(path)).stages[1].id == "b"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(threadkeep.InvalidInput, match="not YAML"):
        load_playbook(bad)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(threadkeep.InvalidInput, match="not JSON"):
        load_playbook(tmp_path / "broken.json")
    with pytest.raises(threadkeep.InvalidInput, match="cannot read playbook"):
        get_playbook(str(tmp_path / "missing.yaml"))
    with pytest.raises(threadkeep.InvalidInput, match="unknown playbook 'buyer'"):
        get_playbook("buyer")


def test_an_edited_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(minimal()))
    assert get_playbook(str(path)).title == ""
    changed = {**minimal(), "title": "Changed"}
    path.write_text(json.dumps(changed))
    import os

    os.utime(path, (1, 1))  # a different modification time
    assert get_playbook(str(path)).title == "Changed"


def test_playbook_set(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(minimal()))
    books = PlaybookSet.parse("realtor", f"loc-1:{path}, loc-2:seller")
    assert books.for_tenant("loc-1").name == "mine"
    assert books.for_tenant("loc-2").name == "seller"
    assert books.for_tenant("other").name == "realtor"
    assert books.named("mine", "loc-1").name == "mine"
    assert books.named("seller", "loc-1").name == "seller"
    with pytest.raises(PlaybookNotFound, match="no playbook 'mine' for this tenant"):
        books.named("mine", "other")
    with pytest.raises(threadkeep.InvalidInput, match="tenant:playbook pairs"):
        PlaybookSet.parse("seller", "loc-1")
    with pytest.raises(threadkeep.InvalidInput, match="cannot read playbook"):
        PlaybookSet.parse("seller", f"loc-1:{tmp_path / 'nope.yaml'}")
    assert set(SHIPPED) == {"realtor", "seller"}
