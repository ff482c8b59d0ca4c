"""Pure extraction rules: phrases → values, no store."""

from datetime import UTC, datetime

import pytest

from threadkeep.bot._extract import (
    extract_cash_ok,
    extract_condition,
    extract_motivation,
    extract_price,
    extract_question,
    extract_timeline_days,
    extract_visit_time,
    wants_human,
)
from threadkeep.bot.seller import SellerState, advance, score_temperature

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "asking", "expected"),
    [
        ("around 450k", False, 450_000),
        ("$450,000", False, 450_000),
        ("450 thousand", False, 450_000),
        ("I'd take 450000 for it", False, 450_000),
        ("$450K firm", False, 450_000),
        ("1.2 million", False, 1_200_000),
        ("$1.2m", False, 1_200_000),
        ("half a million", False, 500_000),
        ("a million bucks", False, 1_000_000),
        ("not 450k, more like 500k", False, 500_000),
        ("400-450k", True, 450_000),
        ("450", True, 450_000),
        ("maybe 600", True, 600_000),
        ("450", False, None),
        ("3 bed 2 bath", True, None),
        ("within 30 days", True, None),
        ("built in 1995", True, None),
        ("hello", True, None),
    ],
)
def test_price(text, asking, expected):
    assert extract_price(text, asking=asking) == expected


def test_bare_price_counts_as_a_correction_only_with_a_cue():
    assert extract_price("actually 500", correcting=True) == 500_000
    assert extract_price("500", correcting=True) is None
    assert extract_price("actually 500", correcting=False) is None


@pytest.mark.parametrize(
    ("text", "asking", "expected"),
    [
        ("needs a new roof", False, ("needs_work", ["roof"])),
        (
            "the roof leaks and the foundation is cracked",
            False,
            ("needs_work", ["roof", "foundation"]),
        ),
        ("HVAC needs replacing", False, ("needs_work", ["hvac"])),
        ("the roof is 20 years old", False, ("needs_work", ["roof"])),
        ("4 bed 2 bath, furnace is about 30 yrs old", False, ("needs_work", ["hvac"])),
        ("it has some mold", False, ("needs_work", ["mold"])),
        ("fixer-upper", False, ("needs_work", [])),
        ("good shape", False, ("good", [])),
        ("well maintained", False, ("good", [])),
        ("new roof last year, great condition", False, ("good", [])),
        ("move-in ready", False, ("excellent", [])),
        ("fully renovated", False, ("excellent", [])),
        ("needs some work", False, ("fair", [])),
        ("a bit dated", False, ("fair", [])),
        ("falling apart", False, ("poor", [])),
        ("the house is a mess", False, ("poor", [])),
        ("honestly it's a total mess inside", False, ("poor", [])),
        ("it needs everything", False, ("poor", [])),
        ("it's a bit of a mess", False, ("needs_work", [])),
        ("pretty run down", False, ("needs_work", [])),
        ("it needs nothing", False, ("good", [])),
        ("needs nothing, the roof is new", False, ("good", [])),
        ("doesn't need anything", False, ("good", [])),
        ("no repairs needed, it's turnkey", False, ("good", [])),
        ("not a mess at all", False, None),
        ("it's ok", True, ("fair", [])),
        ("fine", True, ("good", [])),
        ("fine", False, None),
        ("hello there", True, None),
    ],
)
def test_condition(text, asking, expected):
    assert extract_condition(text, asking=asking) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("relocating for work", "relocation"),
        ("got a new job in Denver", "relocation"),
        ("we're moving to Texas", "relocation"),
        ("going through a divorce", "divorce"),
        ("I inherited it from my aunt", "inherited"),
        ("my dad passed away", "inherited"),
        ("we're downsizing", "downsizing"),
        ("three months behind on payments", "financial"),
        ("facing foreclosure", "financial"),
        ("retiring to Florida", "retirement"),
        ("tired of being a landlord", "landlord"),
        ("just curious what it's worth", "curious"),
        ("hello", None),
    ],
)
def test_motivation(text, expected):
    assert extract_motivation(text) == expected


def test_motivation_other_only_when_asked():
    assert extract_motivation("because we want a change of scenery", asking=True) == "other"
    assert extract_motivation("because we want a change of scenery") is None


@pytest.mark.parametrize(
    ("text", "asking", "expected"),
    [
        ("within 30 days", False, 30),
        ("in 2 months", False, 60),
        ("in a couple of weeks", False, 14),
        ("over the next six months", False, 180),
        ("asap", False, 14),
        ("as soon as possible", False, 14),
        ("next month", False, 60),
        ("next year", False, 365),
        ("no rush", False, 365),
        ("30-60 days", True, 60),
        ("30 days", True, 30),
        ("30 days", False, None),
        ("we bought it 10 years ago", True, None),
        ("the roof is 20 years old", True, None),
        ("lived here 10 years", True, None),
        ("three months behind on payments", True, None),
        ("not sure yet", True, None),
    ],
)
def test_timeline(text, asking, expected):
    assert extract_timeline_days(text, asking=asking) == expected


def test_timeline_correction_with_a_cue():
    assert extract_timeline_days("sorry, make that 2 months", correcting=True) == 60
    assert extract_timeline_days("2 months", correcting=True) is None


@pytest.mark.parametrize(
    ("text", "asking", "expected"),
    [
        ("yes", True, True),
        ("sure", True, True),
        ("yeah that works", True, True),
        ("no problem", True, True),
        ("no", True, False),
        ("nah", True, False),
        ("not really", True, False),
        ("no rush, but yes", True, True),
        ("no rush", True, None),
        ("not sure", True, None),
        ("yes", False, None),
        ("cash is fine", False, True),
        ("cash is totally fine", False, True),
        ("open to a cash offer", False, True),
        ("not interested in cash", False, False),
        ("cash offers welcome", False, True),
        ("cash offers are fine", False, True),
        ("a cash offer works", False, True),
        ("I don't want a cash offer", False, False),
    ],
)
def test_cash(text, asking, expected):
    assert extract_cash_ok(text, asking=asking) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("can I talk to a human", True),
        ("I want to speak with a real person", True),
        ("agent please", True),
        ("get me a human", True),
        ("I'd rather list with an agent", False),
        ("the human touch matters", False),
    ],
)
def test_wants_human(text, expected):
    assert wants_human(text) is expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "cold"),
        ({"timeline_days": 30, "cash_offer_ok": True, "motivation": "relocation"}, "hot"),
        ({"timeline_days": 60, "cash_offer_ok": True, "motivation": "divorce"}, "hot"),
        (
            {
                "timeline_days": 14,
                "cash_offer_ok": False,
                "motivation": "divorce",
                "condition": "poor",
            },
            "warm",
        ),
        ({"timeline_days": 90, "cash_offer_ok": False, "motivation": "retirement"}, "warm"),
        ({"timeline_days": 365, "cash_offer_ok": False, "motivation": "curious"}, "cold"),
    ],
)
def test_temperature(fields, expected):
    assert score_temperature(SellerState(**fields)) == expected


def test_advance_is_pure_and_records_corrections():
    state = SellerState(stage="Q3", condition="good", price_expectation=450_000)
    turn = advance(state, "actually more like 500k", NOW)
    assert state.price_expectation == 450_000
    assert turn.state.price_expectation == 500_000
    assert turn.corrected == ("price_expectation",)
    assert turn.state.corrections == 1
    assert turn.state.stage == "Q3"
    assert turn.state.updated_at == NOW


def test_state_round_trips_as_json():
    state = advance(SellerState(), "needs a new roof, want $300k", NOW).state
    assert SellerState.model_validate_json(state.model_dump_json()) == state


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("When can you come by to see it?", "schedule"),
        ("Can we schedule a walkthrough?", "schedule"),
        ("call me tomorrow", "schedule"),
        ("How much would you offer?", "offer"),
        ("how does the cash offer work?", "offer"),
        ("What would you pay for it?", "offer"),
        ("What happens next?", "next"),
        ("ok, what now?", "next"),
        ("how does this work", "next"),
        ("Thanks!", "thanks"),
        ("ok thank you so much", "thanks"),
        ("It needs a new roof", None),
        ("thanks, but the price is 500k", None),
    ],
)
def test_question(text, expected):
    assert extract_question(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tuesday afternoon works", "Tuesday afternoon"),
        ("tomorrow at 10am?", "tomorrow at 10am"),
        ("how about 3pm", "3pm"),
        ("next week", "next week"),
        ("I want 450", None),
        ("in 30 days", None),
    ],
)
def test_visit_time(text, expected):
    assert extract_visit_time(text) == expected
