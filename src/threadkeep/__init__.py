"""threadkeep: keep the conversations of chat agents.

One API over memory, SQLite, Redis and PostgreSQL stores::

    import threadkeep
    with threadkeep.open("sqlite:///threadkeep.db") as store:
        conv = store.resume("contact-1", tenant="loc-1")
        store.append(conv.id, "user", "Hi")
"""

from threadkeep._api import DEFAULT_STORE_URL, open, open_async, redact_url
from threadkeep._clock import Clock, ManualClock, SystemClock
from threadkeep._config import DEFAULT_LIMITS, DEFAULT_RETENTION, TIERS, Limits, Retention, Tier
from threadkeep._encryption import Encryption, Reencrypted
from threadkeep._exceptions import (
    BackendError,
    BackendUnavailable,
    ConversationClosed,
    ConversationNotFound,
    CursorExpired,
    EncryptionError,
    HistoryConflict,
    IllegalTransition,
    InvalidInput,
    StateConflict,
    StoreClosed,
    ThreadkeepError,
    TurnInProgress,
)
from threadkeep._guidance import guidance
from threadkeep._models import (
    Conversation,
    Counts,
    ErasureReceipt,
    Event,
    Fact,
    FactVersion,
    Message,
    Page,
    StateSnapshot,
    SweepReport,
)
from threadkeep._rules.events import EventKind
from threadkeep._rules.lifecycle import TRANSITIONS, Status
from threadkeep._rules.validate import ROLES
from threadkeep._store import AsyncStore, Store
from threadkeep._turn import AsyncTurn, Turn

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_RETENTION",
    "DEFAULT_STORE_URL",
    "ROLES",
    "TIERS",
    "TRANSITIONS",
    "AsyncStore",
    "AsyncTurn",
    "BackendError",
    "BackendUnavailable",
    "Clock",
    "Conversation",
    "ConversationClosed",
    "ConversationNotFound",
    "Counts",
    "CursorExpired",
    "Encryption",
    "EncryptionError",
    "ErasureReceipt",
    "Event",
    "EventKind",
    "Fact",
    "FactVersion",
    "HistoryConflict",
    "IllegalTransition",
    "InvalidInput",
    "Limits",
    "ManualClock",
    "Message",
    "Page",
    "Reencrypted",
    "Retention",
    "StateConflict",
    "StateSnapshot",
    "Status",
    "Store",
    "StoreClosed",
    "SweepReport",
    "SystemClock",
    "ThreadkeepError",
    "Tier",
    "Turn",
    "TurnInProgress",
    "__version__",
    "guidance",
    "open",
    "open_async",
    "redact_url",
]
