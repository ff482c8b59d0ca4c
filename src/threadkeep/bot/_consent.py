"""Opt-out and opt-in words ("STOP", "START"), recognised the way SMS carriers do (pure).

A message that is only a keyword counts (``STOP``, ``stop.``, ``Unsubscribe``), as do a few
plain requests ("please stop texting me", "unsubscribe me", "opt me out"). A keyword inside a
longer sentence does not: "I want to stop paying rent" is not an opt-out.
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = ["OPT_IN_REPLY", "OPT_OUT_FACT", "OPT_OUT_REPLY", "Consent", "consent"]

Consent = Literal["stop", "start"]

#: The contact fact that records an opt-out (value ``True``; ``False`` after "START").
OPT_OUT_FACT: Final = "opted_out"
OPT_OUT_REPLY: Final = (
    "You're unsubscribed and won't get any more messages from us. Reply START to resume."
)
OPT_IN_REPLY: Final = "You're subscribed again. How can I help?"

# The standard keywords (CTIA / Twilio Advanced Opt-Out), as a whole message.
_STOP_WORDS: Final = frozenset(
    {"stop", "stopall", "stop all", "unsubscribe", "cancel", "end", "quit", "optout", "opt out",
     "opt-out", "revoke"}
)  # fmt: skip
_START_WORDS: Final = frozenset({"start", "unstop", "subscribe", "optin", "opt in", "opt-in"})
_STOP_PHRASES: Final = re.compile(
    r"^(?:please\s+)?(?:stop|quit|don'?t keep|do not keep)\s+(?:texting|messaging|contacting|"
    r"emailing|calling|sending(?: me)?(?: messages| texts)?)(?:\s+me)?(?:\s+please)?$|"
    r"^(?:please\s+)?(?:unsubscribe|opt)\s+me(?:\s+out)?(?:\s+please)?$|"
    r"^(?:please\s+)?remove me from (?:this|your|the) (?:list|messages)(?:\s+please)?$",
    re.IGNORECASE,
)


def _plain(text: str) -> str:
    """The message lower-cased, without surrounding punctuation and repeated spaces."""
    return " ".join(re.sub(r"[^\w\s'-]", " ", text).split()).lower()


def consent(text: str) -> Consent | None:
    """Return ``"stop"`` for an opt-out, ``"start"`` for an opt-in, else None.

    Args:
        text: the contact's whole message.
    """
    plain = _plain(text)
    if plain in _STOP_WORDS or _STOP_PHRASES.match(plain):
        return "stop"
    if plain in _START_WORDS:
        return "start"
    return None
