"""The dashboard's state editor (static/stateedit.js): its pure functions, run in Chromium.

No server and no DOM: the script is loaded into a blank page and each function is called with
``page.evaluate``, against the JSON Schema the seller bot really declares.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

try:
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # pragma: no cover - depends on the machine
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("playwright is not installed (pip install playwright)", allow_module_level=True)

from threadkeep.bot.seller import SellerState
from threadkeep.web.routes import STATIC_DIR

pytestmark = pytest.mark.browser
SCHEMA = SellerState.model_json_schema()


@pytest.fixture(scope="module")
def js(browser):
    page = browser.new_page()
    page.set_content("<!doctype html><title>stateedit</title>")
    page.add_script_tag(content=(STATIC_DIR / "stateedit.js").read_text(encoding="utf-8"))

    def call(name: str, *args: Any) -> Any:
        return page.evaluate(f"(args) => TKState.{name}(...args)", list(args))

    yield call
    page.close()


def by_key(fields: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["key"]: f for f in fields}


def test_fields_follow_the_schema_then_a_persons_own_fields(js):
    fields = js("fields", SCHEMA, {"stage": "Q2", "agent_notes": "call after 5"})
    keys = [f["key"] for f in fields]
    assert keys[: len(SCHEMA["properties"])] == list(SCHEMA["properties"])
    assert keys[-1] == "agent_notes"  # a field the schema does not know is kept, last
    f = by_key(fields)
    assert f["price_expectation"]["kind"] == "money"
    assert f["price_expectation"]["title"] == "Asking price"
    assert f["timeline_days"]["kind"] == "integer"
    assert f["cash_offer_ok"]["kind"] == "boolean"
    assert f["condition"]["kind"] == "enum" and "needs_work" in f["condition"]["options"]
    assert f["condition_issues"]["kind"] == "json"
    assert f["updated_at"]["kind"] == "datetime"
    assert f["agent_notes"]["kind"] == "text" and f["agent_notes"]["nullable"]
    assert f["stage"]["locked"] and f["last_seq"]["locked"]  # the bot's own fields
    assert not f["price_expectation"]["locked"] and f["price_expectation"]["nullable"]


def test_free_form_state_gets_controls_from_its_values(js):
    f = by_key(js("fields", None, {"n": 3, "ok": True, "s": "x", "l": [1], "nothing": None}))
    assert {k: v["kind"] for k, v in f.items()} == {
        "n": "number",
        "ok": "boolean",
        "s": "text",
        "l": "json",
        "nothing": "text",
    }


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("price_expectation", "450000", 450_000),
        ("price_expectation", "$450,000", 450_000),
        ("price_expectation", " 450 000 ", 450_000),
        ("price_expectation", "", None),
        ("timeline_days", "30", 30),
        ("cash_offer_ok", "false", False),
        ("condition", "needs_work", "needs_work"),
        ("condition_issues", '["roof", "hvac"]', ["roof", "hvac"]),
    ],
)
def test_parse_turns_text_into_the_fields_value(js, key, text, value):
    field = by_key(js("fields", SCHEMA, {}))[key]
    assert js("parse", text, field) == value


@pytest.mark.parametrize(
    ("key", "text", "says"),
    [
        ("price_expectation", "about 450k", "Asking price must be a whole number"),
        ("timeline_days", "3.5", "whole number"),
        ("cash_offer_ok", "maybe", "must be yes or no"),
        ("condition", "lovely", "must be one of poor, needs_work"),
        ("condition_issues", "roof", "must be JSON"),
    ],
)
def test_parse_refuses_with_a_message_a_person_reads(js, key, text, says):
    field = by_key(js("fields", SCHEMA, {}))[key]
    with pytest.raises(PlaywrightError, match=says):
        js("parse", text, field)


def test_edits_are_what_changed_and_apply_keeps_the_rest(js):
    base = {"price_expectation": 450_000, "condition": "good", "agent_notes": "x"}
    fields = js("fields", SCHEMA, base)
    inputs = {"price_expectation": "$450,000", "condition": "fair", "agent_notes": "y"}
    changes = js("edits", base, inputs, fields)
    assert changes == [["condition", "fair"], ["agent_notes", "y"]]
    assert js("apply", base, changes) == {
        "price_expectation": 450_000,
        "condition": "fair",
        "agent_notes": "y",
    }


def test_conflict_rows_mark_the_fields_both_screens_changed(js):
    base = {"note": "draft", "price_expectation": 400_000, "stage": "Q2"}
    server = {"note": "theirs", "price_expectation": 400_000, "stage": "Q3"}
    rows = {r["key"]: r for r in js("conflict", base, [["note", "mine"]], server)}
    assert set(rows) == {"note", "stage"}  # price: nobody changed it
    assert rows["note"]["clash"] is True
    assert rows["stage"]["clash"] is False and rows["stage"]["server"] == "Q3"


def test_summary_shows_set_unlocked_fields_formatted(js):
    value = {
        "stage": "Q4",
        "condition": "needs_work",
        "condition_issues": ["roof"],
        "price_expectation": 450_000,
        "cash_offer_ok": True,
        "motivation": None,
        "temperature": "warm",
        "answered": ["Q1"],
    }
    rows = js("summary", SCHEMA, value)
    assert [(r["title"], r["text"]) for r in rows] == [
        ("Condition", "needs work"),
        ("Repairs", "roof"),
        ("Asking price", "$450,000"),
        ("Cash offer OK", "yes"),
        ("Temperature", "warm"),
    ]


def test_same_ignores_key_order_only(js):
    assert js("same", {"a": 1, "b": [1, {"c": 2}]}, {"b": [1, {"c": 2}], "a": 1}) is True
    assert js("same", [1, 2], [2, 1]) is False
    assert js("same", {"a": None}, {}) is False
