"""Encryption at rest: message content and payloads, state versions and contact facts.

A store opened with ``encryption=Encryption(...)`` seals those values in the front, before an
op reaches the backend, and opens them in the answers, before the public models are built;
the backends store and compare opaque text and never hold a key. Everything else (ids,
tenants, contacts, roles, metadata, stages, statuses, times, seqs, events) stays as it was, so
listing, counts, seqs and the event log work unchanged.

A sealed value is ``tk1:<key id>:<base64url(nonce | ciphertext | tag)>`` (AES-256-GCM, a
96-bit nonce); JSON values (payloads, states, fact values) hold it as a JSON string, so every
backend keeps valid JSON. The associated data binds a value to its place: its kind
(``content``, ``payload``, ``state``) and conversation id, or for a fact its tenant, contact and
key. A ciphertext copied into another conversation, contact, key or field does not open.
Message and state nonces are random; a fact's nonce is derived from its key, place and value
(HMAC-SHA256, as in SIV), so remembering the same value twice under one key stores the same
text and the backends' "same value only refreshes" rule keeps working.

Values written before encryption was configured (plaintext) read as before;
``Store.reencrypt`` seals them, and rewrites values sealed under an older key, in place.
The ``cryptography`` package (extra ``threadkeep[encryption]``) is imported only here, and
only when a store is opened with encryption.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, ClassVar, Final, TypeVar

from threadkeep._exceptions import EncryptionError, InvalidInput
from threadkeep._rules.ops import (
    AppendManyOp,
    AppendOp,
    AppendReadOp,
    ArchivedOp,
    ClearOp,
    CountsOp,
    DeleteContactOp,
    DeleteOp,
    DeliveryOp,
    EventsOp,
    FactContactsOp,
    FindOpenOp,
    GetOp,
    KeyOp,
    LeaseOp,
    ListOp,
    LoadStateOp,
    Op,
    Outcome,
    PopOp,
    ReadOp,
    RecallOp,
    ReleaseOp,
    RememberOp,
    ReplaceOp,
    Result,
    RetainOp,
    RewriteOp,
    SaveStateOp,
    StartOp,
    SweepOp,
    UpdateOp,
    WindowOp,
)
from threadkeep._rules.rows import ConversationRow, FactRow, MessageRow, NewMessage, StateRow
from threadkeep.backends._protocol import AsyncBackend, Backend

__all__ = [
    "ENV_VAR",
    "HANDLING",
    "AsyncSealedBackend",
    "Encryption",
    "Reencrypted",
    "SealedBackend",
    "Sealer",
    "reencrypt_flow",
]

R = TypeVar("R")

#: The environment variable the service and the command line read the keys from.
ENV_VAR: Final = "THREADKEEP_ENCRYPTION_KEYS"
#: What every sealed value starts with (the format's version).
PREFIX: Final = "tk1:"
_JSON_PREFIX: Final = '"' + PREFIX
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_NONCE = 12


@dataclass(frozen=True)
class Encryption:
    """Keys for encryption at rest: ``Encryption(keys={"k2": new, "k1": old}, current="k2")``.

    Attributes:
        keys: key id → 32-byte AES-256 key. Every key a stored value may be under must be
            here; ids are 1-32 letters, digits, ``_`` or ``-``.
        current: the id of the key new values are sealed with.
    """

    #: The environment variable the service and the CLI read the keys from (``from_env``).
    ENV_VAR: ClassVar[str] = ENV_VAR

    keys: Mapping[str, bytes] = field(repr=False)
    current: str

    def __post_init__(self) -> None:
        """Check the keys; keep a read-only copy.

        Raises:
            InvalidInput: no keys, a bad key id, a key not 32 bytes long, or ``current``
                not among the keys.
        """
        if not isinstance(self.keys, Mapping) or not self.keys:
            raise InvalidInput("encryption needs at least one key", field="keys")
        for kid, key in self.keys.items():
            if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid):
                raise InvalidInput(
                    f"key id {kid!r} must be 1-32 letters, digits, '_' or '-'", field="keys"
                )
            if not isinstance(key, bytes) or len(key) != 32:
                size = len(key) if isinstance(key, bytes) else type(key).__name__
                raise InvalidInput(
                    f"key {kid!r} must be 32 bytes (AES-256), not {size}", field="keys"
                )
        if self.current not in self.keys:
            raise InvalidInput(
                f"current key id {self.current!r} is not one of the keys "
                f"({', '.join(sorted(self.keys))})",
                field="current",
            )
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    def __repr__(self) -> str:
        return f"Encryption(keys=<{', '.join(self.keys)}>, current={self.current!r})"

    def __hash__(self) -> int:
        return hash((frozenset(self.keys.items()), self.current))

    @classmethod
    def from_env(cls, text: str) -> Encryption:
        """Parse ``THREADKEEP_ENCRYPTION_KEYS``: ``"k2:<base64>,k1:<base64>"``, current first.

        Raises:
            InvalidInput: a malformed entry, bad base64, or a key not 32 bytes long.
        """
        keys: dict[str, bytes] = {}
        for entry in (e.strip() for e in text.split(",")):
            kid, colon, encoded = entry.partition(":")
            if not colon or kid in keys:
                raise InvalidInput(
                    f"{ENV_VAR} must be 'id:base64key' entries separated by commas, the "
                    f"current key first (entry {kid!r} is malformed or repeated)",
                    field=ENV_VAR,
                )
            try:
                keys[kid] = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise InvalidInput(
                    f"key {kid!r} of {ENV_VAR} is not base64", field=ENV_VAR
                ) from None
        return cls(keys=keys, current=next(iter(keys)))

    @staticmethod
    def generate_key() -> bytes:
        """Return a new random 32-byte key."""
        return os.urandom(32)


_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")


def _b64(data: bytes) -> str:
    """Unpadded base64url (binascii directly: the base64 module's wrappers cost as much)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Decode ``_b64`` text (padding past the end is ignored)."""
    return binascii.a2b_base64(text.encode("ascii").translate(_FROM_URLSAFE) + b"==")


class Sealer:
    """Seals values of ops and opens values of answers with an ``Encryption``'s keys."""

    def __init__(self, encryption: Encryption) -> None:
        """Load the AES-GCM keys.

        Raises:
            InvalidInput: ``encryption`` is not an Encryption, or the ``cryptography``
                package is not installed.
        """
        if not isinstance(encryption, Encryption):
            raise InvalidInput(
                f"encryption must be a threadkeep.Encryption, not {type(encryption).__name__}",
                field="encryption",
            )
        try:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:  # pragma: no cover - the extra is installed in development
            raise InvalidInput(
                "encryption needs the cryptography package: pip install 'threadkeep[encryption]'",
                field="encryption",
            ) from None
        self._invalid_tag = InvalidTag
        self.current = encryption.current
        self._aead = {kid: AESGCM(key) for kid, key in encryption.keys.items()}
        self._nonce_keys = {
            kid: hashlib.sha256(b"threadkeep nonce\x00" + key).digest()
            for kid, key in encryption.keys.items()
        }
        self._current_head = f"{PREFIX}{self.current}:"

    # ---- one value ----------------------------------------------------------------------

    def seal(self, plain: str, aad: bytes, derived: bool = False) -> str:
        """Return ``plain`` sealed with the current key (``derived``: a deterministic nonce)."""
        data = plain.encode("utf-8", "surrogatepass")
        if derived:
            mac = hmac.new(self._nonce_keys[self.current], aad + b"\x00" + data, "sha256")
            nonce = mac.digest()[:_NONCE]
        else:
            nonce = os.urandom(_NONCE)
        sealed = self._aead[self.current].encrypt(nonce, data, aad)
        return self._current_head + _b64(nonce + sealed)

    def open(self, text: str, aad: bytes) -> str:
        """Return the plaintext of ``text`` (text that is not sealed is returned as it is).

        Raises:
            EncryptionError: its key was not given, or it was altered.
        """
        if not text.startswith(PREFIX):
            return text
        kid, colon, body = text[len(PREFIX) :].partition(":")
        aead = self._aead.get(kid)
        if not colon or aead is None:
            raise EncryptionError(
                f"a stored value is encrypted under key id {kid!r}, which this store was not "
                f"given (it has {', '.join(sorted(self._aead))}); add that key",
                key_id=kid,
            )
        try:
            raw = _unb64(body)
            plain = aead.decrypt(raw[:_NONCE], raw[_NONCE:], aad)
        except (binascii.Error, ValueError, self._invalid_tag):
            raise EncryptionError(
                f"a stored value under key id {kid!r} fails authentication: it was altered "
                "or moved from another place",
                key_id=kid,
            ) from None
        return plain.decode("utf-8", "surrogatepass")

    def seal_json(self, value_json: str, aad: bytes, derived: bool = False) -> str:
        """Seal JSON text into a JSON string, so the stored text stays JSON."""
        return json.dumps(self.seal(value_json, aad, derived))

    def open_json(self, value_json: str, aad: bytes) -> str:
        """Open what ``seal_json`` made (plain JSON text is returned as it is)."""
        if not value_json.startswith(_JSON_PREFIX):
            return value_json
        return self.open(json.loads(value_json), aad)

    def is_current(self, text: str | None) -> bool:
        """Whether a stored value needs no rewrite: absent, or sealed with the current key."""
        return text is None or text.lstrip('"').startswith(self._current_head)

    # ---- ops and answers ----------------------------------------------------------------

    def seal_op(self, op: Op[R]) -> Op[R]:
        """Return ``op`` with the values it writes sealed (other ops as they are)."""
        seal = HANDLING[type(op)][0]
        return op if seal is None else seal(self, op)

    def seal_new(self, conversation_id: str, item: NewMessage) -> NewMessage:
        """Seal a message of a batch (``append_many``, ``replace_messages``)."""
        aad = conversation_id.encode()
        return item._replace(
            content=self.seal(item.content, b"content\x00" + aad),
            payload_json=None
            if item.payload_json is None
            else self.seal_json(item.payload_json, b"payload\x00" + aad),
        )

    def open_result(self, op: Op[R], result: Result[R]) -> Result[R]:
        """Return ``result`` of ``op`` with the values it carries opened.

        Raises:
            EncryptionError: a value's key was not given, or it was altered.
        """
        opener = HANDLING[type(op)][1]
        return result if opener is None else Result(result.outcome, opener(self, op, result.value))

    def open_message(self, conversation_id: str, row: Any) -> Any:
        """Open a MessageRow's or WindowRow's content and payload."""
        aad = conversation_id.encode()
        payload = row.payload_json
        return row._replace(
            content=self.open(row.content, b"content\x00" + aad),
            payload_json=None if payload is None else self.open_json(payload, b"payload\x00" + aad),
        )

    def open_state(self, conversation_id: str, row: StateRow) -> StateRow:
        """Open a state version's value."""
        aad = b"state\x00" + conversation_id.encode()
        return row._replace(value_json=self.open_json(row.value_json, aad))

    def open_fact(self, tenant: str, contact_id: str, row: FactRow) -> FactRow:
        """Open a fact's value and the values of its history."""
        aad = _fact_aad(tenant, contact_id, row.key)
        history = json.loads(row.history_json)
        for entry in history:
            entry["value"] = self.open_json(entry["value"], aad)
        return row._replace(
            value_json=self.open_json(row.value_json, aad),
            history_json=json.dumps(history, separators=(",", ":")) if history else "[]",
        )

    # ---- rewriting under the current key ------------------------------------------------

    def _reseal(self, text: str, aad: bytes, is_json: bool, derived: bool = False) -> str:
        if is_json:
            return self.seal_json(self.open_json(text, aad), aad, derived)
        return self.seal(self.open(text, aad), aad)

    def reseal_message(self, row: MessageRow) -> MessageRow | None:
        """The row with content and payload under the current key; None when they are."""
        if self.is_current(row.content) and self.is_current(row.payload_json):
            return None
        aad = row.conversation_id.encode()
        payload = row.payload_json
        return row._replace(
            content=self._reseal(row.content, b"content\x00" + aad, False),
            payload_json=None
            if payload is None
            else self._reseal(payload, b"payload\x00" + aad, True),
        )

    def reseal_state(self, conversation_id: str, row: StateRow) -> StateRow | None:
        """The state version under the current key; None when it is."""
        if self.is_current(row.value_json):
            return None
        aad = b"state\x00" + conversation_id.encode()
        return row._replace(value_json=self._reseal(row.value_json, aad, True))

    def reseal_fact(self, tenant: str, contact_id: str, row: FactRow) -> FactRow | None:
        """The fact, value and history, under the current key; None when it is."""
        history = json.loads(row.history_json)
        if self.is_current(row.value_json) and all(self.is_current(h["value"]) for h in history):
            return None
        aad = _fact_aad(tenant, contact_id, row.key)
        for entry in history:
            entry["value"] = self._reseal(entry["value"], aad, True, derived=True)
        return row._replace(
            value_json=self._reseal(row.value_json, aad, True, derived=True),
            history_json=json.dumps(history, separators=(",", ":")) if history else "[]",
        )


def _rows(sealer: Sealer, op: Any, rows: list[Any]) -> list[Any]:
    return [sealer.open_message(op.conversation_id, row) for row in rows]


def _row(sealer: Sealer, op: Any, row: MessageRow | None) -> MessageRow | None:
    return None if row is None else sealer.open_message(op.conversation_id, row)


def _window(sealer: Sealer, op: Any, value: tuple[list[Any], int]) -> tuple[list[Any], int]:
    return _rows(sealer, op, value[0]), value[1]


def _batch(
    sealer: Sealer, op: Any, pairs: list[tuple[MessageRow, bool]]
) -> list[tuple[MessageRow, bool]]:
    return [(sealer.open_message(op.conversation_id, row), again) for row, again in pairs]


def _state(sealer: Sealer, op: Any, row: StateRow | None) -> StateRow | None:
    return None if row is None else sealer.open_state(op.conversation_id, row)


def _fact(sealer: Sealer, op: Any, row: FactRow) -> FactRow:
    return sealer.open_fact(op.tenant, op.contact_id, row)


def _facts(sealer: Sealer, op: Any, rows: list[FactRow]) -> list[FactRow]:
    return [sealer.open_fact(op.tenant, op.contact_id, row) for row in rows]


def _seal_append(sealer: Sealer, op: AppendOp) -> AppendOp:
    aad = op.conversation_id.encode()
    payload = op.payload_json
    return replace(
        op,
        content=sealer.seal(op.content, b"content\x00" + aad),
        payload_json=None if payload is None else sealer.seal_json(payload, b"payload\x00" + aad),
    )


def _seal_append_read(sealer: Sealer, op: AppendReadOp) -> AppendReadOp:
    return AppendReadOp(_seal_append(sealer, op.append))


def _row_read(
    sealer: Sealer, op: AppendReadOp, value: tuple[MessageRow, ConversationRow | None] | None
) -> tuple[MessageRow, ConversationRow | None] | None:
    if value is None:
        return None
    return sealer.open_message(op.append.conversation_id, value[0]), value[1]


def _seal_items(sealer: Sealer, op: AppendManyOp | ReplaceOp) -> AppendManyOp | ReplaceOp:
    return replace(op, items=tuple(sealer.seal_new(op.conversation_id, i) for i in op.items))


def _seal_state(sealer: Sealer, op: SaveStateOp) -> SaveStateOp:
    if op.rollback_to is not None:  # the backend copies a stored (sealed) version
        return op
    aad = b"state\x00" + op.conversation_id.encode()
    return replace(op, value_json=sealer.seal_json(op.value_json, aad))


def _seal_fact(sealer: Sealer, op: RememberOp) -> RememberOp:
    aad = _fact_aad(op.tenant, op.contact_id, op.key)
    return replace(op, value_json=sealer.seal_json(op.value_json, aad, derived=True))


Sealing = Callable[[Sealer, Any], Any]
Opening = Callable[[Sealer, Any, Any], Any]

#: Every op, and what the front does with it: (how the values it writes are sealed, how the
#: values its answer carries are opened); None where it writes, or answers, none. A new op
#: must be added here (``tests/core/test_encryption.py`` holds ``ALL_OPS`` to it), so none
#: stores plaintext or shows sealed text by being forgotten.
HANDLING: Final[Mapping[type[Any], tuple[Sealing | None, Opening | None]]] = {
    StartOp: (None, None),
    GetOp: (None, None),
    FindOpenOp: (None, None),
    UpdateOp: (None, None),
    RetainOp: (None, None),
    ListOp: (None, None),
    CountsOp: (None, None),
    DeleteOp: (None, None),
    DeleteContactOp: (None, None),
    SweepOp: (None, None),
    AppendOp: (_seal_append, _row),
    AppendReadOp: (_seal_append_read, _row_read),  # a conversation row holds nothing sealed
    AppendManyOp: (_seal_items, _batch),
    PopOp: (None, _row),
    ClearOp: (None, None),
    ReplaceOp: (_seal_items, _window),  # answers (the new messages, the last seq)
    KeyOp: (None, _row),
    ReadOp: (None, _rows),
    DeliveryOp: (None, _row),  # writes metadata only
    WindowOp: (None, _window),
    SaveStateOp: (_seal_state, None),  # answers the version
    LoadStateOp: (None, _state),
    EventsOp: (None, None),  # events carry no content
    LeaseOp: (None, None),
    ReleaseOp: (None, None),
    RememberOp: (_seal_fact, _fact),
    RecallOp: (None, _facts),
    # the rotation walk's, sent to the raw backend only: their values stay as stored
    RewriteOp: (None, None),
    FactContactsOp: (None, None),
    ArchivedOp: (None, None),
}


def _fact_aad(tenant: str, contact_id: str, key: str) -> bytes:
    return b"fact\x00" + "\x00".join((tenant, contact_id, key)).encode()


@dataclass(frozen=True, slots=True)
class Reencrypted:
    """Progress, then the result, of ``Store.reencrypt``: counts of what was walked so far.

    Attributes:
        conversations: conversations walked.
        rewritten: values rewritten under the current key (messages, state versions, facts).
        changed: values a concurrent write changed between the read and the rewrite; they
            were left as that write made them (a later walk picks up anything it moved).
        done: whether the walk is finished.
    """

    conversations: int = 0
    rewritten: int = 0
    changed: int = 0
    done: bool = False


def reencrypt_flow(
    sealer: Sealer,
    tenant: str,
    batch: int,
    versions_kept: int,
    now_us: Callable[[], int],
) -> Generator[Op[Any] | Reencrypted, Any, Reencrypted]:
    """Walk ``tenant``'s live conversations, then the contacts with facts, ``batch`` at a time.

    Yields the raw-backend ops to run (send back their Result) and, after each conversation,
    a ``Reencrypted`` progress (send back None); returns the final counts.

    The list is ordered by activity, so a conversation written to during the walk may move
    ahead of the page cursor: the walk lists again until a pass finds no conversation it has
    not walked. Conversations started after the walk began are written under the current key
    and are not walked.
    """
    began = now_us()
    walked = rewritten = wanted = 0
    seen: set[str] = set()

    def rewrite(op: RewriteOp) -> Generator[Op[Any], Any, None]:
        nonlocal rewritten, wanted
        wanted += len(op.messages) + len(op.states) + len(op.facts) + len(op.archived)
        result = yield op
        rewritten += result.value

    def conversation(conv: ConversationRow) -> Generator[Op[Any], Any, None]:
        after = 0
        while True:
            read = yield ReadOp(conv.id, conv.tenant, now_us(), None, after, batch)
            pairs = [
                (m, sealed) for m in read.value if (sealed := sealer.reseal_message(m)) is not None
            ]
            if pairs:
                yield from rewrite(RewriteOp(conv.id, conv.tenant, messages=tuple(pairs)))
            if len(read.value) < batch:
                break
            after = read.value[-1].seq
        states = []
        for version in range(
            max(1, conv.state_version - versions_kept + 1), conv.state_version + 1
        ):
            loaded = yield LoadStateOp(conv.id, conv.tenant, now_us(), version)
            if loaded.outcome is Outcome.OK and loaded.value is not None:
                sealed_state = sealer.reseal_state(conv.id, loaded.value)
                if sealed_state is not None:
                    states.append((loaded.value, sealed_state))
        if states:
            yield from rewrite(RewriteOp(conv.id, conv.tenant, states=tuple(states)))
        cursor = ""
        while True:  # messages trimmed by max_messages, kept for idempotent replays
            page = yield ArchivedOp(conv.id, conv.tenant, cursor, batch)
            rows, cursor = page.value
            archived = [
                (m, sealed) for m in rows if (sealed := sealer.reseal_message(m)) is not None
            ]
            if archived:
                yield from rewrite(RewriteOp(conv.id, conv.tenant, archived=tuple(archived)))
            if not cursor:
                break

    fresh = True
    while fresh:  # one pass over the list
        fresh = False
        cursor: tuple[int, str] | None = None
        while True:
            listed = yield ListOp(tenant, now_us(), None, None, None, None, batch, cursor)
            for conv in listed.value[:batch]:
                if conv.id in seen or conv.created_us > began:
                    continue
                seen.add(conv.id)
                fresh = True
                yield from conversation(conv)
                walked += 1
                yield Reencrypted(walked, rewritten, wanted - rewritten)
            if len(listed.value) <= batch:
                break
            last = listed.value[batch - 1]
            cursor = (last.activity_us, last.id)
    cursor_text = ""
    while True:
        page = yield FactContactsOp(tenant, cursor_text, batch)
        contacts, cursor_text = page.value
        for contact in contacts:
            recalled = yield RecallOp(tenant, contact, None, now_us())
            facts = [
                (f, sealed)
                for f in recalled.value
                if (sealed := sealer.reseal_fact(tenant, contact, f)) is not None
            ]
            if facts:
                yield from rewrite(RewriteOp(None, tenant, contact_id=contact, facts=tuple(facts)))
        if not cursor_text:
            break
    return Reencrypted(walked, rewritten, wanted - rewritten, done=True)


class SealedBackend:
    """A Backend that seals what ops write and opens what answers carry (see Sealer)."""

    def __init__(self, inner: Backend, sealer: Sealer) -> None:
        self.inner = inner
        self.sealer = sealer

    def execute(self, op: Op[R]) -> Result[R]:
        """Carry out ``op`` on the inner backend, sealed; open its answer."""
        return self.sealer.open_result(op, self.inner.execute(self.sealer.seal_op(op)))

    def ping(self) -> None:
        """See Backend.ping."""
        self.inner.ping()

    def close(self) -> None:
        """See Backend.close."""
        self.inner.close()


class AsyncSealedBackend:
    """The AsyncBackend twin of SealedBackend."""

    def __init__(self, inner: AsyncBackend, sealer: Sealer) -> None:
        self.inner = inner
        self.sealer = sealer

    async def execute(self, op: Op[R]) -> Result[R]:
        """See SealedBackend.execute."""
        return self.sealer.open_result(op, await self.inner.execute(self.sealer.seal_op(op)))

    async def ping(self) -> None:
        """See Backend.ping."""
        await self.inner.ping()

    async def close(self) -> None:
        """See Backend.close."""
        await self.inner.close()
