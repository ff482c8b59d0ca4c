"""Deterministic, offline extraction of a home seller's answers from free text.

Every function is pure. Strong patterns ("needs a new roof", "$450,000", "within 30 days") count
wherever they appear, so out-of-order answers are caught; weak ones (a bare "450", "good",
"yes") count only when ``asking`` names the question the bot has just asked.
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = [
    "Question",
    "extract_cash_ok",
    "extract_condition",
    "extract_motivation",
    "extract_price",
    "extract_question",
    "extract_timeline_days",
    "extract_visit_time",
    "wants_human",
]

_F = re.IGNORECASE

# ---- condition ----------------------------------------------------------------------------

_ISSUES: Final = (
    ("roof", r"roof"),
    ("foundation", r"foundation"),
    ("plumbing", r"plumbing|pipes?"),
    ("hvac", r"hvac|furnace|a/?c\b|air conditioning|heating"),
    ("electrical", r"electrical|wiring"),
    ("windows", r"windows?"),
    ("kitchen", r"kitchen"),
    ("bathroom", r"bath(?:room)?s?"),
    ("flooring", r"floor(?:ing|s)?"),
    ("water damage", r"water damage|flood(?:ed|ing)?"),
    ("mold", r"mou?ld"),
    ("termites", r"termites?"),
    ("fire damage", r"fire damage|fire"),
)
_NEED: Final = (
    r"(?:needs?|need to (?:fix|replace|redo)|requires?|bad|old|leak\w*|broken|cracked|"
    r"damaged|failing|issues? with(?: the)?|problems? with(?: the)?)"
)
_ISSUE_AFTER: Final = (
    r"(?:is|are|'s)?\s*(?:(?:about |over |almost |nearly )?(?:\d+|twenty|thirty|forty|fifty)\s*"
    r"(?:years?|yrs?) old|old|bad|shot|leak\w*|failing|cracked|damaged|broken|"
    r"issues?|problems?|repairs?|needs? (?:work|replacing|replacement|repairs?))"
)
_DAMAGE_ALONE: Final = re.compile(
    r"\b(water damage|mou?ld|termites?|fire damage|flood(?:ed|ing))\b", _F
)

_POOR: Final = re.compile(
    r"\b(poor (?:shape|condition)|bad shape|terrible|falling apart|uninhabitable|gutted|"
    r"tear ?down|condemned|in rough shape|rough shape|a wreck|a disaster|a dump|trashed|"
    r"in shambles|needs? everything|(?<!not )(?<!bit of )a (?:total |complete |real |huge |big )?"
    r"mess)\b",
    _F,
)
_NEEDS_WORK: Final = re.compile(
    r"\b(needs? (?:a lot of |lots of |major |serious |significant )?(?:work|repairs?)|"
    r"fixer(?:[- ]upper)?|major repairs?|handyman special|run[- ]?down|neglected|beat[- ]up|"
    r"worn[- ]out|(?:a )?bit of a mess|messy)\b",
    _F,
)
# Nothing to repair: good, whatever repair words follow ("needs nothing, the roof is new").
_NOTHING_NEEDED: Final = re.compile(
    r"\b(needs? nothing|(?:doesn'?t|does not|won'?t|will not) need (?:anything|any work|"
    r"any repairs?)|nothing (?:needs|to) (?:be )?(?:fix\w*|done|repair\w*|replac\w*)|"
    r"no (?:repairs?|work) (?:needed|required|necessary)|needs? no (?:work|repairs?)|"
    r"turn-?key|nothing wrong with it)\b",
    _F,
)
_FAIR: Final = re.compile(
    r"\b(needs? (?:some|a little|a bit of|minor) (?:work|updat\w*|repairs?|tlc)|tlc|cosmetic|"
    r"(?:a bit |pretty |kind of |somewhat )?(?:dated|outdated)|needs? (?:paint|painting|updating)|"
    r"fair (?:shape|condition))\b",
    _F,
)
_EXCELLENT: Final = re.compile(
    r"\b(excellent|perfect (?:shape|condition)|move[- ]in ready|like new|brand new|"
    r"(?:fully |newly |completely )?(?:renovated|remodeled|remodelled)|mint)\b",
    _F,
)
_GOOD: Final = re.compile(
    r"\b((?:good|great|nice|decent|solid) (?:shape|condition)|well[- ](?:maintained|kept)|"
    r"no (?:major )?(?:issues|problems)|nothing wrong)\b",
    _F,
)
# Only when the bot has just asked about the condition.
_WEAK_CONDITION: Final = (
    ("poor", re.compile(r"\b(bad|poor|awful|rough)\b", _F)),
    ("fair", re.compile(r"\b(fair|ok|okay|average|decent|not bad|so-so|alright)\b", _F)),
    ("excellent", re.compile(r"\b(great|perfect|amazing)\b", _F)),
    ("good", re.compile(r"\b(good|fine|solid|nice)\b", _F)),
)


def _issues(text: str) -> list[str]:
    found: list[str] = []
    for name, pattern in _ISSUES:
        near_need = rf"\b{_NEED}\b[^.,;!?]{{0,25}}?\b(?:{pattern})\b"
        after = rf"\b(?:{pattern})\b\s*{_ISSUE_AFTER}\b"
        if re.search(near_need, text, _F) or re.search(after, text, _F):
            found.append(name)
    for m in _DAMAGE_ALONE.finditer(text):
        word = m.group(1).lower()
        name = (
            "mold"
            if word.startswith("mo")
            else "termites"
            if word.startswith("term")
            else "fire damage"
            if word.startswith("fire")
            else "water damage"
        )
        if name not in found:
            found.append(name)
    return found


def extract_condition(text: str, *, asking: bool = False) -> tuple[str, list[str]] | None:
    """Return ``(label, issues)`` for the property's condition, or None when not stated.

    Labels, worst first: ``poor``, ``needs_work``, ``fair``, ``good``, ``excellent``. Named
    repairs ("needs a new roof") make it ``needs_work`` at least and are listed in ``issues``.

    Args:
        text: the seller's message.
        asking: whether the bot has just asked about the condition (enables bare words such
            as "good" or "ok").
    """
    issues = _issues(text)
    if _POOR.search(text):
        return "poor", issues
    if _NOTHING_NEEDED.search(text):
        return "good", []
    if issues or _NEEDS_WORK.search(text):
        return "needs_work", issues
    if _FAIR.search(text):
        return "fair", issues
    if _EXCELLENT.search(text):
        return "excellent", issues
    if _GOOD.search(text):
        return "good", issues
    if asking:
        for label, pattern in _WEAK_CONDITION:
            if pattern.search(text):
                return label, issues
    return None


# ---- price --------------------------------------------------------------------------------

_NUMBER_RE: Final = re.compile(
    r"(?P<dollar>\$)?\s*(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)\s*"
    r"(?P<suffix>k\b|thousand\b|grand\b|mil\b|million\b|mm\b|m\b)?"
    r"(?P<after>\s*(?:-|to|or)?\s*\$?\d*\s*(?:days?|weeks?|months?|years?|yrs?|beds?|"
    r"bedrooms?|baths?|bathrooms?|sq|square|ft|feet|%|percent|acres?)\b)?",
    _F,
)
_WORD_PRICES: Final = (
    (re.compile(r"\bhalf an? mil(?:lion)?\b", _F), 500_000),
    (re.compile(r"(?<!half )\b(?:a|one) mil(?:lion)?\b", _F), 1_000_000),
)
_CORRECTION: Final = re.compile(
    r"\b(actually|i meant|meant to say|make (?:it|that)|correction|more like|rather|sorry|"
    r"instead|changed my mind|on second thought)\b",
    _F,
)
_MIN_PRICE: Final = 10_000
_MAX_PRICE: Final = 100_000_000


def _price_of(match: re.Match[str], bare_ok: bool) -> int | None:
    if match.group("after"):
        return None
    raw = match.group("num").replace(",", "")
    value = float(raw)
    suffix = (match.group("suffix") or "").lower()
    if suffix in ("k", "thousand", "grand"):
        value *= 1_000
    elif suffix in ("m", "mm", "mil", "million"):
        value *= 1_000_000
    elif match.group("dollar"):
        if value < 10_000 and bare_ok:
            value *= 1_000
    elif len(raw) == 4 and raw[:2] in ("19", "20"):
        return None  # a year: "built in 1995"
    elif value >= _MIN_PRICE:
        pass  # a full amount such as 450000 or 450,000
    elif bare_ok and 50 <= value < 10_000 and "." not in raw:
        value *= 1_000  # "450" when asked for the price means 450k
    elif bare_ok and 0 < value < 10 and "." in raw:
        value *= 1_000_000  # "1.2" means 1.2 million
    else:
        return None
    price = round(value)
    return price if _MIN_PRICE <= price <= _MAX_PRICE else None


def extract_price(text: str, *, asking: bool = False, correcting: bool = False) -> int | None:
    """Return the price the seller expects, in whole dollars, or None.

    "around 450k", "$450,000", "450 thousand", "1.2 million", "half a million" count anywhere;
    a bare "450" counts when the bot has just asked for the price, or when the seller is
    correcting a price already given ("actually 500"). The last amount in the text wins, so
    "not 450k, more like 500k" gives 500000.

    Args:
        text: the seller's message.
        asking: whether the bot has just asked for the price.
        correcting: whether a price is already known (a correction may then use a bare number).
    """
    bare_ok = asking or (correcting and bool(_CORRECTION.search(text)))
    found: list[tuple[int, int]] = []
    for m in _NUMBER_RE.finditer(text):
        price = _price_of(m, bare_ok)
        if price is not None:
            found.append((m.start(), price))
    for pattern, amount in _WORD_PRICES:
        found.extend((m.start(), amount) for m in pattern.finditer(text))
    return max(found)[1] if found else None


# ---- motivation ---------------------------------------------------------------------------

_MOTIVATIONS: Final = (
    (
        "curious",
        r"just (?:curious|looking|browsing|checking)|testing the (?:market|waters)|"
        r"see what (?:it'?s|it is|i could get|we could get)|"
        r"not (?:really )?(?:sure|planning) (?:i|we|to) (?:want to )?sell",
    ),
    ("divorce", r"divorc\w*|separat(?:ed|ion|ing)|splitting up|break ?up"),
    (
        "inherited",
        r"inherit\w*|passed away|estate|probate|(?:my|our) late (?:mother|father|mom|dad|parents?)",
    ),
    (
        "financial",
        r"foreclos\w*|behind on (?:the )?(?:payments|mortgage)|can'?t afford|"
        r"financial\w*|debt|bills|lost (?:my|his|her|our) job|money (?:problems|issues|trouble)",
    ),
    (
        "relocation",
        r"relocat\w*|(?:new|got a) job|job (?:transfer|offer)|transferr?ed|"
        r"moving (?:to|out|away|across|for|abroad|states?)|"
        r"mov(?:e|ing) (?:closer|near) (?:to )?(?:family|my|our)",
    ),
    ("downsizing", r"downsiz\w*|too big|empty nest\w*|smaller (?:place|home|house)"),
    (
        "upsizing",
        r"upsiz\w*|(?:need|want) (?:a )?(?:bigger|larger) (?:place|home|house)|growing family|"
        r"baby on the way|too small",
    ),
    ("retirement", r"retir\w*"),
    ("health", r"health|medical|assisted living|nursing home|can'?t (?:do|manage) (?:the )?stairs"),
    (
        "landlord",
        r"tired of (?:being a )?landlord\w*|bad tenants?|rental (?:property|headaches)|"
        r"tenants? (?:trashed|left|won'?t)",
    ),
)
_MOTIVATION_RES: Final = tuple((name, re.compile(rf"\b(?:{p})", _F)) for name, p in _MOTIVATIONS)


def extract_motivation(text: str, *, asking: bool = False) -> str | None:
    """Return the seller's reason to sell as a category, or None.

    Categories: ``relocation``, ``divorce``, ``inherited``, ``financial``, ``downsizing``,
    ``upsizing``, ``retirement``, ``health``, ``landlord``, ``curious`` and, when the bot has
    just asked and the answer is some other sentence, ``other``.

    Args:
        text: the seller's message.
        asking: whether the bot has just asked for the motivation.
    """
    for name, pattern in _MOTIVATION_RES:
        if pattern.search(text):
            return name
    if asking and re.search(r"\b(?:because|since|want to|need to|we're|i'm|moving)\b", text, _F):
        return "other"
    return None


# ---- timeline -----------------------------------------------------------------------------

_WORD_NUMBERS: Final = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "a couple": 2, "a couple of": 2, "couple": 2, "couple of": 2, "a few": 3, "few": 3,
    "several": 3,
}  # fmt: skip
_UNIT_DAYS: Final = {"day": 1, "week": 7, "month": 30, "year": 365}
_N: Final = (
    r"\d+|a couple of|a couple|couple of|couple|a few|few|several|an?|"
    r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
)
_DURATION_RE: Final = re.compile(
    rf"(?P<lead>\b(?:in|within|inside(?: of)?|next|under|less than|by|over)\s+(?:the\s+)?"
    rf"(?:next\s+)?(?:about\s+|around\s+|roughly\s+|maybe\s+)?)?"
    rf"\b(?P<n>{_N})(?:\s*(?:-|to|or)\s*(?P<n2>{_N}))?\s*(?P<unit>day|week|month|year)s?\b"
    rf"(?P<tail>\s+(?:ago|old|behind|late|of (?:owning|living)))?",
    _F,
)
_PAST: Final = re.compile(
    r"\b(?:for|lived(?: here| there)?|owned(?: it)?|had(?: it)?|been)\s*$", _F
)
_PHRASES: Final = (
    (re.compile(r"\b(asap|as soon as possible|right away|immediately|urgent\w*)\b", _F), 14),
    (re.compile(r"\b(tomorrow)\b", _F), 1),
    (re.compile(r"\b(this week)\b", _F), 7),
    (re.compile(r"\b(next week)\b", _F), 14),
    (re.compile(r"\b(this month|end of the month)\b", _F), 30),
    (re.compile(r"\b(next month)\b", _F), 60),
    (re.compile(r"\b(half a year)\b", _F), 180),
    (re.compile(r"\b(this year|end of the year|by year'?s end)\b", _F), 180),
    (re.compile(r"\b(next year)\b", _F), 365),
    (re.compile(r"\b(no rush|no hurry|not in a (?:rush|hurry)|whenever|flexible)\b", _F), 365),
)  # fmt: skip


def _count(word: str) -> int:
    word = word.lower()
    return int(word) if word.isdigit() else _WORD_NUMBERS[word]


def extract_timeline_days(
    text: str, *, asking: bool = False, correcting: bool = False
) -> int | None:
    """Return how many days the seller gives the sale, or None.

    "within 30 days", "in 2 months", "next month", "asap" (14), "no rush" (365) count
    anywhere; a bare "30 days" counts when the bot has just asked for the timeline. A range
    ("30-60 days") gives its upper end; "10 years ago" or "20 years old" are not timelines.

    Args:
        text: the seller's message.
        asking: whether the bot has just asked for the timeline.
        correcting: whether a timeline is already known (a correction such as "sorry, make
            that 2 months" may then use a bare duration).
    """
    asking = asking or (correcting and bool(_CORRECTION.search(text)))
    best: int | None = None
    for m in _DURATION_RE.finditer(text):
        if m.group("tail") or not (m.group("lead") or asking):
            continue
        if not m.group("lead") and _PAST.search(text[max(0, m.start() - 20) : m.start()]):
            continue  # "lived here 10 years", "for 5 years": how long, not when
        n = max(_count(m.group("n")), _count(m.group("n2")) if m.group("n2") else 0)
        best = n * _UNIT_DAYS[m.group("unit").lower()]
    if best is not None:
        return best
    for pattern, days in _PHRASES:
        if pattern.search(text):
            return days
    return None


# ---- cash offer ---------------------------------------------------------------------------

_CASH_NO: Final = re.compile(
    r"\b(no cash|not (?:open to|interested in|looking for|considering) (?:a |an |any )?"
    r"(?:all[- ])?cash|"
    r"(?:don'?t|do not|wouldn'?t|won'?t) (?:want|take|accept|consider) (?:a |an |any )?"
    r"(?:all[- ])?cash|"
    r"cash (?:offer )?(?:is|would be|isn'?t|wouldn'?t be) (?:not )?(?:for me|a no)|"
    r"(?:want|need) (?:full )?(?:market|retail) (?:value|price)|no to cash)\b",
    _F,
)
_CASH_YES: Final = re.compile(
    r"\b(cash(?: offers?)? (?:is|are|would be|sounds|'s)?\s*(?:totally |perfectly |completely |"
    r"very |more than )?(?:fine|good|great|ok|okay|perfect|acceptable|welcome|works)|"
    r"cash (?:offers? )?works|(?:open to|fine with|ok with|okay with|happy with|"
    r"consider|take|accept|prefer|love|like) (?:a |an )?(?:all[- ])?cash)\b",
    _F,
)
_NEUTRAL: Final = re.compile(
    r"\b(no rush|no hurry|no idea|not sure|no reason|no problem|not in a (?:rush|hurry))\b", _F
)
_NO: Final = re.compile(
    r"\b(no|nope|nah|not really|probably not|i don'?t think so|rather not|not interested|"
    r"no thanks|not for me|no way|i'?d pass|pass)\b",
    _F,
)
_YES: Final = re.compile(
    r"\b(yes|yeah|yea|yep|yup|sure|ok|okay|of course|absolutely|definitely|that works|"
    r"sounds good|fine|why not|i would|open to it|works for me|certainly|totally|"
    r"no problem)\b",
    _F,
)


def extract_cash_ok(text: str, *, asking: bool = False) -> bool | None:
    """Return whether a cash offer in the seller's timeline is acceptable, or None.

    Explicit sentences ("cash is fine", "not interested in cash") count anywhere; a plain
    "yes" / "sure" / "no" / "not really" counts when the bot has just asked about cash.

    Args:
        text: the seller's message.
        asking: whether the bot has just asked whether a cash offer would work.
    """
    if _CASH_NO.search(text):
        return False
    if _CASH_YES.search(text):
        return True
    if not asking:
        return None
    if re.search(r"\bno problem\b", text, _F):
        return True
    rest = _NEUTRAL.sub(" ", text)
    if _NO.search(rest):
        return False
    if _YES.search(rest):
        return True
    return None


# ---- handoff ------------------------------------------------------------------------------

_HUMAN: Final = re.compile(
    r"\b((?:talk|speak|chat) (?:to|with) (?:a |an |the |some )?(?:real |actual |live )?"
    r"(?:human|person|agent|someone|somebody|representative|rep|realtor|manager)|"
    r"real (?:person|human)|live (?:person|agent)|human(?: being)?,? please|agent,? please|"
    r"get me (?:a |an )?(?:human|person|agent)|operator)\b",
    _F,
)


def wants_human(text: str) -> bool:
    """Return whether the seller asks for a person ("talk to a human", "agent please" …)."""
    return bool(_HUMAN.search(text))


# ---- questions the seller asks ------------------------------------------------------------

#: What a seller asks about: a visit, the cash offer, the next steps, or a thank-you.
Question = Literal["schedule", "offer", "next", "thanks"]

_QUESTIONS: Final[tuple[tuple[Question, re.Pattern[str]], ...]] = (
    (
        "schedule",
        re.compile(
            r"\b(schedul\w*|appointment|come (?:by|over|out|and see|see)|visit|walk-?through|"
            r"(?:see|look at) the (?:house|home|property|place)|when can (?:you|someone|we)|"
            r"what time|book (?:a|an|the)|call me|meet)\b",
            _F,
        ),
    ),
    (
        "offer",
        re.compile(
            r"\b(offer|how much (?:would|will|can|could|do) you|what (?:would|will|can|could) you "
            r"(?:pay|give)|cash buyer|how does (?:the )?cash|how do you (?:pay|buy))\b",
            _F,
        ),
    ),
    (
        "next",
        re.compile(
            r"\b(what(?:'s| is| happens)? next|next steps?|what now|now what|then what|"
            r"what happens now|how (?:does|do) (?:this|it|you) work|what do (?:i|we) do now)\b",
            _F,
        ),
    ),
    (
        "thanks",
        re.compile(
            r"^\W*(?:ok(?:ay)?,?\s*)?(?:thanks?(?: you)?(?: so much| a lot)?|thank you|thx|ty|"
            r"great|cool|perfect|awesome|bye|goodbye|sounds good)\W*$",
            _F,
        ),
    ),
)
_DAY: Final = (
    r"(?:(?:this |next )?(?:mon|tues|wednes|thurs|fri|satur|sun)day|tomorrow|today|tonight|"
    r"(?:this|next) (?:weekend|week))"
)
_TIME: Final = (
    r"(?:(?:at |around |after |before )?\d{1,2}(?::\d{2})?\s*(?:am|pm|a\.m\.|p\.m\.)?|"
    r"(?:in the )?(?:morning|afternoon|evening)|noon|lunch ?time)"
)
_VISIT_TIME: Final = re.compile(
    rf"\b({_DAY}(?:\s+{_TIME})?|(?:at |around )\d{{1,2}}(?::\d{{2}})?\s*(?:am|pm)|"
    rf"\d{{1,2}}(?::\d{{2}})?\s*(?:am|pm))\b",
    _F,
)


def extract_question(text: str) -> Question | None:
    """Return what the seller asks about, or None.

    ``schedule`` (a visit, a call, "when can you come by"), ``offer`` (the cash offer, "how
    much would you pay"), ``next`` ("what happens next", "how does this work") or ``thanks``
    (a message that only thanks or agrees).

    Args:
        text: the seller's message.
    """
    for name, pattern in _QUESTIONS:
        if pattern.search(text):
            return name
    return None


def extract_visit_time(text: str) -> str | None:
    """Return when the seller would like a visit ("tomorrow at 10", "Tuesday afternoon"), or None.

    A bare number is not a time; a day ("Friday", "next week"), or a clock time with am/pm
    ("3pm"), is.

    Args:
        text: the seller's message.
    """
    match = _VISIT_TIME.search(text)
    return " ".join(match.group(1).split()) if match else None
