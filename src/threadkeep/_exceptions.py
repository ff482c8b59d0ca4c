"""The threadkeep error hierarchy.

Every error a caller can see is one of these; nothing from sqlite3, redis or psycopg leaks.
Each class carries ``http_status`` so the HTTP service maps them all in one handler::

    ThreadkeepError                               500
    ├── InvalidInput (also ValueError)            422  bad role/content/size/id/metadata/URL
    ├── ConversationNotFound (also LookupError)   404  absent or expired
    ├── ConversationClosed                        409  closed conversations take no messages
    ├── IllegalTransition                         409  lifecycle forbids that status change
    ├── StateConflict                             412  expected_version is not the current one
    │   └── HistoryConflict                       412  expected_last_seq is not the last seq
    ├── TurnInProgress                            409  another worker holds the turn lease
    ├── CursorExpired                             410  the events cursor fell out of the log
    ├── StoreClosed                               500  the store handle was closed
    ├── EncryptionError                           500  a stored value's key is missing, or altered
    └── BackendError                              500  the backend failed; retrying won't fix it
        └── BackendUnavailable                    503  the backend cannot be reached
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConversationClosed",
    "ConversationNotFound",
    "CursorExpired",
    "EncryptionError",
    "HistoryConflict",
    "IllegalTransition",
    "InvalidInput",
    "StateConflict",
    "StoreClosed",
    "ThreadkeepError",
    "TurnInProgress",
]


class ThreadkeepError(Exception):
    """Base class of every error threadkeep raises."""

    http_status = 500


class InvalidInput(ThreadkeepError, ValueError):
    """Bad input, rejected before anything was written.

    Attributes:
        field: the name of the offending argument or field.
    """

    http_status = 422

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConversationNotFound(ThreadkeepError, LookupError):
    """The conversation does not exist, has expired, or belongs to another tenant."""

    http_status = 404

    def __init__(self, conversation_id: str) -> None:
        super().__init__(
            f"conversation {conversation_id!r} not found (it may never have existed, "
            "have expired, or have been deleted)"
        )
        self.conversation_id = conversation_id


class ConversationClosed(ThreadkeepError):
    """The conversation is closed and takes no more messages or changes."""

    http_status = 409

    def __init__(self, conversation_id: str) -> None:
        super().__init__(
            f"conversation {conversation_id!r} is closed and takes no more messages; "
            "start or resume a new conversation for this contact"
        )
        self.conversation_id = conversation_id


class IllegalTransition(ThreadkeepError):
    """The lifecycle does not allow moving from the current status to the target."""

    http_status = 409

    def __init__(self, conversation_id: str, current: str, target: str, allowed: Iterable[str]):
        self.conversation_id = conversation_id
        self.current = current
        self.target = target
        self.allowed = tuple(sorted(allowed))
        allowed_text = ", ".join(self.allowed) or "none (it is final)"
        super().__init__(
            f"conversation {conversation_id!r} cannot go from {current!r} to {target!r}; "
            f"from {current!r} it may go to: {allowed_text}"
        )


class StateConflict(ThreadkeepError):
    """``expected_version`` is not the current state version; nothing was saved."""

    http_status = 412

    def __init__(self, conversation_id: str, expected_version: int, current_version: int):
        self.conversation_id = conversation_id
        self.expected_version = expected_version
        self.current_version = current_version
        super().__init__(
            f"state of conversation {conversation_id!r} is at version {current_version}, "
            f"not {expected_version}; reload it, re-apply your change and save again"
        )


class HistoryConflict(StateConflict):
    """``expected_last_seq`` is not the conversation's last seq; the history is unchanged.

    Attributes:
        expected_last_seq: the seq the caller expected last.
        current_last_seq: the conversation's last seq (also ``current_version``).
    """

    def __init__(self, conversation_id: str, expected_last_seq: int, current_last_seq: int):
        super().__init__(conversation_id, expected_last_seq, current_last_seq)
        self.expected_last_seq = expected_last_seq
        self.current_last_seq = current_last_seq
        self.args = (
            f"the history of conversation {conversation_id!r} ends at seq {current_last_seq}, "
            f"not {expected_last_seq}; reread it and replace it again",
        )


class TurnInProgress(ThreadkeepError):
    """Another worker holds this conversation's turn lease (or took it over)."""

    http_status = 409

    def __init__(self, conversation_id: str, detail: str = "") -> None:
        self.conversation_id = conversation_id
        super().__init__(
            detail
            or f"another worker is answering conversation {conversation_id!r}; "
            "retry when its turn ends or wait with turn(..., timeout=seconds)"
        )


class CursorExpired(ThreadkeepError):
    """The events cursor points before the oldest event still retained."""

    http_status = 410

    def __init__(self, cursor: str) -> None:
        self.cursor = cursor
        super().__init__(
            f"events cursor {cursor!r} fell out of the retained event log; "
            "reload the current data, then follow events from after=None"
        )


class StoreClosed(ThreadkeepError):
    """The store handle was closed with ``close()``; open a new one."""

    def __init__(self) -> None:
        super().__init__("this store was closed; open a new one with threadkeep.open(url)")


class EncryptionError(ThreadkeepError):
    """A stored value cannot be opened: its key was not given, or it was altered.

    The store's configuration (or its data) is wrong, not the request: 500.

    Attributes:
        key_id: the key id the value names.
    """

    def __init__(self, message: str, *, key_id: str | None = None) -> None:
        super().__init__(message)
        self.key_id = key_id


class BackendError(ThreadkeepError):
    """The backend failed in a way that retrying will not fix."""


class BackendUnavailable(BackendError):
    """The backend could not be reached (after the configured retries).

    Attributes:
        backend: the backend's scheme (``redis``, ``postgresql``, ``sqlite`` …).
        host: where it was looked for, without any password.
    """

    http_status = 503

    def __init__(self, backend: str, host: str, cause: str) -> None:
        self.backend = backend
        self.host = host
        super().__init__(f"{backend} at {host} is unavailable: {cause}")
