"""Visitor tokens: what a browser on a public site may do without a tenant's API key.

With ``THREADKEEP_PUBLIC_CHAT=true``, ``POST /v1/chat`` without an API key is a *visitor*'s turn.
Its answer carries a ``visitor_token`` scoped to that one conversation and its contact: with it
the browser reads that conversation and its messages, posts to it (``POST /v1/chat``) and follows
its events; every other route, and every other conversation, answers 404. A visitor never sees
``system`` or ``tool`` messages, message metadata, the stage or the conversation's metadata.

Tokens are signed with ``itsdangerous`` (HMAC-SHA256) under ``THREADKEEP_VISITOR_SECRET``; a
comma-separated list rotates secrets: the first signs, every one is accepted. A token is valid
for ``THREADKEEP_VISITOR_TOKEN_TTL`` seconds after it was issued; each turn issues a fresh one.

A visitor never names a contact of the tenant. Its first message may carry the browser's own
random id as ``contact_id`` (at least 16 characters); the service turns it into the contact
``web-<hmac of that id>``, so a retried first message, or a browser that lost its token, finds
the same contact, and no id a visitor can send is another contact's (a phone number, a CRM id).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from itsdangerous import BadSignature, URLSafeTimedSerializer

from threadkeep import Conversation, Event, EventKind, InvalidInput, Message

__all__ = [
    "MIN_BROWSER_ID",
    "VISIBLE_ROLES",
    "VISITOR_EVENTS",
    "Visitor",
    "VisitorTokens",
    "visible",
]

#: The roles of the messages a visitor sees (never ``system`` or ``tool``).
VISIBLE_ROLES: Final = frozenset({"user", "assistant", "agent"})
#: The kinds of event a visitor follows (a message, a person joining, closing, erasure): no
#: stage or state events. A message's event only for the roles a visitor sees.
VISITOR_EVENTS: Final = frozenset(
    {
        EventKind.MESSAGE_APPENDED, EventKind.STATUS_CHANGED, EventKind.CLOSED,
        EventKind.DELETED, EventKind.MESSAGE_POPPED, EventKind.MESSAGES_CLEARED,
        EventKind.MESSAGES_REPLACED,
    }
)  # fmt: skip
#: The shortest browser id a visitor may send as ``contact_id`` (it must be hard to guess).
MIN_BROWSER_ID: Final = 16
_SALT: Final = "threadkeep.visitor-token"
_CONTACT_SALT: Final = b"threadkeep.visitor-contact:"


@dataclass(frozen=True, slots=True)
class Visitor:
    """A caller holding a visitor token, or a first message without one.

    Attributes:
        tenant: the tenant of its conversation.
        contact_id: its contact (None: a first message that named none yet).
        conversation_id: the one conversation it may see (None: not started yet).
    """

    tenant: str
    contact_id: str | None = None
    conversation_id: str | None = None

    def allows(self, conversation_id: str) -> bool:
        """Return whether this visitor may see ``conversation_id``."""
        return self.conversation_id is not None and hmac.compare_digest(
            self.conversation_id.encode(), conversation_id.encode()
        )

    def sees(self, event: Event) -> bool:
        """Return whether this visitor's event stream carries ``event``."""
        if event.kind not in VISITOR_EVENTS or not self.allows(event.conversation_id):
            return False
        about_one = event.kind in (EventKind.MESSAGE_APPENDED, EventKind.MESSAGE_POPPED)
        return not about_one or event.data.get("role") in VISIBLE_ROLES


def visible(message: Message) -> bool:
    """Return whether a visitor sees ``message`` (people's words, not system or tool output).

    An item without words (a tool call, a reasoning step: only a payload) is not shown either.
    """
    return message.role in VISIBLE_ROLES and bool(message.content.strip())


class VisitorTokens:
    """Issues and reads visitor tokens.

    Args:
        secrets: the signing secrets, newest first (the first signs, all are accepted).
        max_age: seconds a token stays valid after it was issued.
    """

    def __init__(self, secrets: Sequence[str], max_age: float) -> None:
        if not secrets:
            raise InvalidInput("visitor tokens need a secret", field="THREADKEEP_VISITOR_SECRET")
        # itsdangerous signs with the last key of its list and accepts every one.
        self._serializer = URLSafeTimedSerializer(
            list(reversed(secrets)),
            salt=_SALT,
            signer_kwargs={"digest_method": hashlib.sha256},
        )
        self._contact_key = secrets[0].encode()
        self.max_age = max_age

    def issue(self, conversation: Conversation) -> str:
        """Return a token for ``conversation`` and its contact."""
        return self.sign(Visitor(conversation.tenant, conversation.contact_id, conversation.id))

    def sign(self, visitor: Visitor) -> str:
        """Return the token of a visitor's scope."""
        return self._serializer.dumps([visitor.tenant, visitor.contact_id, visitor.conversation_id])

    def read(self, token: str) -> Visitor | None:
        """Return the visitor a token names, or None: forged, expired, or not a token."""
        try:
            value = self._serializer.loads(token, max_age=round(self.max_age))
        except BadSignature:  # also SignatureExpired and malformed tokens
            return None
        if not (isinstance(value, list) and len(value) == 3):
            return None
        if not all(isinstance(part, str) for part in value):
            return None
        tenant, contact_id, conversation_id = value
        return Visitor(tenant, contact_id, conversation_id)

    def contact_for(self, browser_id: str) -> str:
        """Return the contact of a browser that sent its own random id.

        Raises:
            InvalidInput: the id is shorter than ``MIN_BROWSER_ID`` characters (guessable).
        """
        if len(browser_id) < MIN_BROWSER_ID:
            raise InvalidInput(
                f"a visitor's contact_id is the browser's own random id, at least "
                f"{MIN_BROWSER_ID} characters; leave it out to get a new contact",
                field="contact_id",
            )
        digest = hmac.new(self._contact_key, _CONTACT_SALT + browser_id.encode(), hashlib.sha256)
        return "web-" + digest.hexdigest()[:24]
