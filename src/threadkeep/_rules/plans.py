"""Plans: the Store's arguments checked and turned into ops, with the time stamped on them.

Each function is pure: the same time, limits and arguments give the same op (``start`` draws
a random id). Every check runs here, before the backend sees anything, so bad input writes
nothing and gets the same ``InvalidInput`` on every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Final, Literal

from threadkeep._config import Limits, Retention
from threadkeep._exceptions import InvalidInput
from threadkeep._ids import check_id, new_id
from threadkeep._rules import cursors, delivery as dl, history, lifecycle, parts, validate
from threadkeep._rules.builders import fast_builder
from threadkeep._rules.ops import (
    AppendManyOp,
    AppendOp,
    ClearOp,
    CountsOp,
    DeleteContactOp,
    DeleteOp,
    DeliveryOp,
    EventsOp,
    FindOpenOp,
    GetOp,
    KeyOp,
    LeaseOp,
    ListOp,
    LoadStateOp,
    PopOp,
    ReadOp,
    RecallOp,
    RememberOp,
    ReplaceOp,
    RetainOp,
    SaveStateOp,
    StartOp,
    SweepOp,
    UpdateOp,
    WindowOp,
)
from threadkeep._rules.retention import check_tier, fact_expiry, retention_us
from threadkeep._rules.rows import ConversationRow
from threadkeep._rules.times import from_us
from threadkeep._serde import dump_state

__all__ = [
    "EVENT_BATCH",
    "SWEEP_BATCH",
    "append",
    "append_many",
    "clear_messages",
    "counts",
    "delete",
    "delete_contact",
    "events",
    "find_open",
    "get",
    "lease",
    "list_conversations",
    "load_state",
    "message_by_key",
    "messages",
    "pop_last",
    "recall",
    "remember",
    "replace_messages",
    "rollback_state",
    "save_state",
    "stage",
    "start",
    "status",
    "sweep",
    "window",
]

#: Events read per backend call while following the log.
EVENT_BATCH = 500
#: Rows changed per sweep transaction.
SWEEP_BATCH = 500

_OPEN = tuple(sorted(s.value for s in lifecycle.OPEN))
_IDLE_FROM = tuple(s.value for s in lifecycle.IDLE_FROM)


# The reads' ops, built as their dataclass __init__ would (every field, in order), without
# its object.__setattr__ call per field: a read makes one per call (builders.fast_builder).
_read_op: Final[
    Callable[[str, str | None, int, int | None, int, int, int | None], ReadOp]
] = fast_builder(ReadOp)  # fmt: skip
_load_state_op: Final[Callable[[str, str | None, int, int | None], LoadStateOp]] = fast_builder(
    LoadStateOp
)
# and the append's (twelve fields: as many object.__setattr__ calls through its __init__)
_append_op: Final[Callable[..., AppendOp]] = fast_builder(AppendOp)


def _tenant(tenant: object) -> str | None:
    """A tenant filter: None (any tenant) or a tenant name."""
    return None if tenant is None else validate.check_name(tenant, "tenant")


def start(
    now_us: int,
    limits: Limits,
    retention: Retention,
    contact_id: str,
    *,
    tenant: str,
    agent_id: str | None,
    channel: str | None,
    stage: str | None,
    metadata: dict[str, Any] | None,
    resume: bool,
    conversation_id: str | None = None,
) -> StartOp:
    """The op of ``Store.start`` or ``Store.resume`` (``conversation_id``: import only)."""
    kept = retention_us(retention)
    row = ConversationRow(
        id=new_id(now_us) if conversation_id is None else check_id(conversation_id),
        tenant=validate.check_name(tenant, "tenant"),
        contact_id=validate.check_name(contact_id, "contact_id"),
        agent_id=validate.check_name(agent_id, "agent_id", optional=True),
        channel=validate.check_name(channel, "channel", optional=True, max_len=64),
        status=lifecycle.Status.NEW.value,
        stage=validate.check_name(stage, "stage", optional=True, max_len=128),
        metadata_json=validate.dump_metadata(metadata, limits),
        created_us=now_us,
        activity_us=now_us,
        expires_us=kept.expires_at(now_us),
        idle_us=kept.idle_at(now_us),
        message_count=0,
        last_seq=0,
        state_version=0,
        retention=kept,
    )
    return StartOp(row, resume, _OPEN, limits.events_kept, conversation_id is not None)


def get(now_us: int, conversation_id: str, tenant: str | None) -> GetOp:
    """The op of ``Store.get``."""
    return GetOp(check_id(conversation_id), _tenant(tenant), now_us)


def find_open(now_us: int, contact_id: str, tenant: str) -> FindOpenOp:
    """The op of ``Store.find_open``."""
    return FindOpenOp(
        validate.check_name(tenant, "tenant"),
        validate.check_name(contact_id, "contact_id"),
        _OPEN,
        now_us,
    )


def append(
    now_us: int,
    limits: Limits,
    conversation_id: str,
    role: str,
    content: str,
    *,
    metadata: dict[str, Any] | None,
    idempotency_key: str | None,
    tenant: str | None,
    fence: int | None = None,
    payload: Any = None,
) -> AppendOp:
    """The op of ``Store.append`` (``fence``: the token of the turn appending)."""
    conversation_id = check_id(conversation_id)
    message = history.check_message(
        role, content, payload=payload, metadata=metadata, idempotency_key=idempotency_key,
        limits=limits,
    )  # fmt: skip
    # AppendOp's fields, in order
    return _append_op(
        conversation_id, None if tenant is None else _tenant(tenant), now_us, message.role,
        message.content, message.metadata_json, message.idempotency_key,
        lifecycle.ON_MESSAGE_VALUES, fence, limits.events_kept, message.payload_json,
        message.link,
    )  # fmt: skip


def append_many(
    now_us: int,
    limits: Limits,
    conversation_id: str,
    items: object,
    *,
    tenant: str | None,
    fence: int | None = None,
) -> AppendManyOp:
    """The op of ``Store.append_many``: every item checked before anything is written."""
    return AppendManyOp(
        conversation_id=check_id(conversation_id),
        tenant=_tenant(tenant),
        now_us=now_us,
        items=history.check_items(items, limits, distinct_keys=False),
        on_message=lifecycle.ON_MESSAGE_VALUES,
        fence=fence,
        events_kept=limits.events_kept,
    )


def pop_last(now_us: int, limits: Limits, conversation_id: str, tenant: str | None) -> PopOp:
    """The op of ``Store.pop_last``."""
    return PopOp(check_id(conversation_id), _tenant(tenant), now_us, limits.events_kept)


def clear_messages(
    now_us: int, limits: Limits, conversation_id: str, tenant: str | None
) -> ClearOp:
    """The op of ``Store.clear_messages``."""
    return ClearOp(check_id(conversation_id), _tenant(tenant), now_us, limits.events_kept)


def replace_messages(
    now_us: int,
    limits: Limits,
    conversation_id: str,
    items: object,
    *,
    expected_last_seq: int | None,
    tenant: str | None,
) -> ReplaceOp:
    """The op of ``Store.replace_messages``: a key may appear once in the new history."""
    return ReplaceOp(
        conversation_id=check_id(conversation_id),
        tenant=_tenant(tenant),
        now_us=now_us,
        items=history.check_items(items, limits, distinct_keys=True),
        expected_last_seq=None
        if expected_last_seq is None
        else validate.check_non_negative(expected_last_seq, "expected_last_seq"),
        events_kept=limits.events_kept,
    )


def message_by_key(now_us: int, conversation_id: str, key: str, tenant: str | None) -> KeyOp:
    """The op of ``Store.message_by_key``."""
    return KeyOp(
        check_id(conversation_id),
        _tenant(tenant),
        now_us,
        validate.check_name(key, "idempotency_key"),
    )


def set_delivery(
    now_us: int,
    limits: Limits,
    conversation_id: str,
    seq: int,
    state: str,
    *,
    provider_id: str | None,
    error: str | None,
    attempted: bool,
    tenant: str | None,
) -> DeliveryOp:
    """The op of ``Store.set_delivery``.

    Raises:
        InvalidInput: an unknown state, a bad seq, provider id or error.
    """
    if state not in dl.DELIVERY_STATES:
        allowed = ", ".join(dl.DELIVERY_STATES)
        raise InvalidInput(f"delivery state {state!r} is not one of {allowed}", field="state")
    if error is not None and (not isinstance(error, str) or len(error) > 2000):
        raise InvalidInput("error must be text of at most 2000 characters", field="error")
    at = from_us(now_us).isoformat()
    delivery: dict[str, Any] = {
        "state": state,
        "provider_id": None
        if provider_id is None
        else validate.check_name(provider_id, "provider_id"),
        "error": error,
        "updated_at": at,
    }
    if attempted:
        delivery["attempted_at"] = at
    return DeliveryOp(
        check_id(conversation_id),
        _tenant(tenant),
        now_us,
        _at_least(seq, "seq", 1),
        validate.dump_json(delivery, "delivery", limits.max_metadata_bytes),
        limits.events_kept,
    )


def _at_least(value: object, field: str, minimum: int) -> int:
    """Any int from ``minimum``, held to what every backend can count.

    That is one less than ``MAX_INT``: a read may ask for one more.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(
            f"{field} must be an integer of {minimum} or more, not {value!r}", field=field
        )
    return min(value, validate.MAX_INT - 1)


def messages(
    now_us: int,
    limits: Limits,
    conversation_id: str,
    *,
    last: int | None,
    after: int | None,
    limit: int | None,
    tenant: str | None,
    before: int | None = None,
) -> ReadOp:
    """The op of ``Store.messages``: ``last``, or ``after`` or ``before`` with ``limit``.

    ``last`` reads one message more, which only tells whether the window may start at the
    first of the others (``windows.window_start``).
    """
    if last is not None and (after is not None or limit is not None or before is not None):
        raise InvalidInput(
            "pass either last=, or after=/before= with limit=, not both", field="last"
        )
    if after is not None and before is not None:
        raise InvalidInput("pass after= or before=, not both", field="before")
    return _read_op(
        check_id(conversation_id),
        _tenant(tenant),
        now_us,
        None if last is None else _at_least(last, "last", 1) + 1,
        0 if after is None else validate.check_non_negative(after, "after"),
        validate.check_limit(limits.max_page if limit is None else limit, "limit", limits),
        None if before is None else _at_least(before, "before", 0),
    )


def window(
    now_us: int,
    conversation_id: str,
    tenant: str | None,
    *,
    format: str = "plain",
    token_budget: int | None = None,
) -> WindowOp:
    """The op of ``Store.context`` (the format and budget apply to what it reads)."""
    parts.check_format(format)
    if token_budget is not None:
        _at_least(token_budget, "token_budget", 1)
    return WindowOp(check_id(conversation_id), _tenant(tenant), now_us)


def save_state(
    now_us: int,
    limits: Limits,
    conversation_id: str,
    state: object,
    *,
    expected_version: int | None,
    tenant: str | None,
) -> SaveStateOp:
    """The op of ``Store.save_state``."""
    return _save(
        now_us, limits, conversation_id, dump_state(state, limits), expected_version, tenant
    )


def rollback_state(
    now_us: int,
    limits: Limits,
    conversation_id: str,
    to_version: int,
    *,
    expected_version: int | None,
    tenant: str | None,
) -> SaveStateOp:
    """The op of ``Store.rollback_state``: a save of kept version ``to_version``'s value."""
    version = validate.check_non_negative(to_version, "to_version")
    # "null" is never written: the backend copies the kept version's value
    return _save(now_us, limits, conversation_id, "null", expected_version, tenant, version)


def _save(
    now_us: int,
    limits: Limits,
    conversation_id: str,
    value_json: str,
    expected_version: int | None,
    tenant: str | None,
    rollback_to: int | None = None,
) -> SaveStateOp:
    return SaveStateOp(
        conversation_id=check_id(conversation_id),
        tenant=_tenant(tenant),
        now_us=now_us,
        value_json=value_json,
        expected_version=_version(expected_version, "expected_version"),
        rollback_to=rollback_to,
        versions_kept=limits.state_versions_kept,
        events_kept=limits.events_kept,
    )


def _version(value: object, field: str) -> int | None:
    return None if value is None else validate.check_non_negative(value, field)


def load_state(
    now_us: int, conversation_id: str, version: int | None, tenant: str | None
) -> LoadStateOp:
    """The op of ``Store.load_state``."""
    return _load_state_op(
        check_id(conversation_id), _tenant(tenant), now_us, _version(version, "version")
    )


def _update(
    now_us: int,
    limits: Limits,
    conversation_id: str,
    tenant: str | None,
    field: Literal["status", "stage", "agent_id"],
    value: str | None,
    allowed_from: tuple[str, ...],
) -> UpdateOp:
    return UpdateOp(
        conversation_id=check_id(conversation_id),
        tenant=_tenant(tenant),
        now_us=now_us,
        field=field,
        value=value,
        allowed_from=allowed_from,
        events_kept=limits.events_kept,
    )


def status(
    now_us: int, limits: Limits, conversation_id: str, target: str, tenant: str | None
) -> UpdateOp:
    """The op of ``Store.set_status`` and ``Store.close_conversation``."""
    checked = lifecycle.check_status(target)
    sources = lifecycle.sources_for(checked)
    return _update(now_us, limits, conversation_id, tenant, "status", checked.value, sources)


def agent(
    now_us: int, limits: Limits, conversation_id: str, value: str | None, tenant: str | None
) -> UpdateOp:
    """The op of ``Store.assign``: the agent who has the conversation (None: nobody)."""
    checked = validate.check_name(value, "agent_id", optional=True)
    return _update(
        now_us, limits, conversation_id, tenant, "agent_id", checked, lifecycle.STAGE_FROM
    )


def retain(
    now_us: int, limits: Limits, conversation_id: str, retention: object, tenant: str | None
) -> RetainOp:
    """The op of ``Store.set_retention``."""
    if not isinstance(retention, Retention):
        raise InvalidInput(
            f"retention must be a threadkeep.Retention, not {type(retention).__name__}",
            field="retention",
        )
    return RetainOp(
        conversation_id=check_id(conversation_id),
        tenant=_tenant(tenant),
        now_us=now_us,
        retention=retention_us(retention),
        events_kept=limits.events_kept,
    )


def stage(
    now_us: int, limits: Limits, conversation_id: str, value: str | None, tenant: str | None
) -> UpdateOp:
    """The op of ``Store.set_stage``."""
    checked = validate.check_name(value, "stage", optional=True, max_len=128)
    return _update(now_us, limits, conversation_id, tenant, "stage", checked, lifecycle.STAGE_FROM)


def list_conversations(
    now_us: int,
    limits: Limits,
    *,
    tenant: str,
    status: str | None,
    stage: str | None,
    agent_id: str | None,
    contact_id: str | None,
    limit: int,
    cursor: str | None,
) -> ListOp:
    """The op of ``Store.list``."""
    return ListOp(
        tenant=validate.check_name(tenant, "tenant"),
        now_us=now_us,
        status=None if status is None else lifecycle.check_status(status).value,
        stage=validate.check_name(stage, "stage", optional=True, max_len=128),
        agent_id=validate.check_name(agent_id, "agent_id", optional=True),
        contact_id=validate.check_name(contact_id, "contact_id", optional=True),
        limit=validate.check_limit(limit, "limit", limits),
        cursor=None if cursor is None else cursors.decode_page(cursor),
    )


def counts(now_us: int, tenant: str) -> CountsOp:
    """The op of ``Store.counts``."""
    return CountsOp(validate.check_name(tenant, "tenant"), now_us)


def delete(now_us: int, limits: Limits, conversation_id: str, tenant: str | None) -> DeleteOp:
    """The op of ``Store.delete``."""
    return DeleteOp(check_id(conversation_id), _tenant(tenant), now_us, limits.events_kept)


def delete_contact(now_us: int, limits: Limits, contact_id: str, tenant: str) -> DeleteContactOp:
    """The op of ``Store.delete_contact``."""
    return DeleteContactOp(
        validate.check_name(tenant, "tenant"),
        validate.check_name(contact_id, "contact_id"),
        now_us,
        limits.events_kept,
    )


def sweep(now_us: int, limits: Limits, dry_run: bool) -> SweepOp:
    """The op of ``Store.sweep``."""
    return SweepOp(
        now_us=now_us,
        dry_run=bool(dry_run),
        idle_to=lifecycle.Status.IDLE.value,
        idle_from=_IDLE_FROM,
        batch=SWEEP_BATCH,
        events_kept=limits.events_kept,
    )


def remember(
    now_us: int,
    limits: Limits,
    contact_id: str,
    key: str,
    value: Any,
    tenant: str,
    tier: str,
    source: Mapping[str, Any] | None = None,
) -> RememberOp:
    """The op of ``Store.remember``."""
    checked = check_tier(tier)
    if source is not None and (
        not isinstance(source, Mapping) or not all(isinstance(k, str) for k in source)
    ):
        raise InvalidInput(
            "source must be a JSON object (a dict with string keys) saying who set the fact",
            field="source",
        )
    return RememberOp(
        tenant=validate.check_name(tenant, "tenant"),
        contact_id=validate.check_name(contact_id, "contact_id"),
        key=validate.check_name(key, "key", max_len=128),
        value_json=validate.dump_json(value, "value", limits.max_metadata_bytes),
        tier=checked,
        now_us=now_us,
        expires_us=fact_expiry(checked, now_us),
        source_json=validate.dump_json(
            None if source is None else dict(source), "source", limits.max_metadata_bytes
        ),
    )


def recall(now_us: int, contact_id: str, key: str | None, tenant: str) -> RecallOp:
    """The op of ``Store.recall``."""
    return RecallOp(
        tenant=validate.check_name(tenant, "tenant"),
        contact_id=validate.check_name(contact_id, "contact_id"),
        key=validate.check_name(key, "key", optional=True, max_len=128),
        now_us=now_us,
    )


def lease(
    now_us: int, conversation_id: str, tenant: str | None, lease: float | timedelta
) -> LeaseOp:
    """Plan the first attempt of turn() to take the lease for ``lease`` (seconds or timedelta)."""
    return LeaseOp(
        check_id(conversation_id), _tenant(tenant), now_us, now_us + validate.check_lease(lease)
    )


def events(tenant: str | None, after: str | None, wait: float) -> EventsOp:
    """Plan one read of the event log after cursor ``after``, waiting up to ``wait`` seconds."""
    return EventsOp(_tenant(tenant), cursors.parse_event(after), EVENT_BATCH, wait)
