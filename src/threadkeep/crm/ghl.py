"""GoHighLevel's wire format, as pure functions of bytes and data (no I/O, no clock).

- ``Verifier.verify(raw, headers)``: ``X-GHL-Signature`` is a base64 Ed25519 signature over the
  raw request body (GoHighLevel's published key by default; several keys may be configured for
  a rotation); the legacy ``X-WH-Signature`` (RSA PKCS#1 v1.5, SHA-256) only when its key is
  configured. Re-serialised JSON never verifies, so only raw bytes are passed here.
- ``parse_event(raw)``: the flat JSON object GoHighLevel posts, with ``type`` and ``locationId``.
- ``check_timestamp``: a delivery older (or newer) than the window is refused as a replay.
- ``GhlMap``: what maps to what (state field → custom field, playbook stage ↔ pipeline stage,
  stage → tags, contact fields → facts), loaded from ``GHL_MAP``.
- ``desired`` and ``diff``: the CRM values a conversation should have, and the changes from
  what was last synced (a ``Snapshot``), which the outbox sends.

Sources: GoHighLevel's webhook and API docs, as summarised in the project's research notes
(``X-GHL-Signature`` Ed25519 over the raw body; only a 429 is retried; ``PUT /contacts/{id}``
takes ``customFields: [{"id"|"key", "field_value"}]``; tags via ``POST``/``DELETE
/contacts/{id}/tags``; ``PUT /opportunities/{id}`` moves a pipeline stage).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from threadkeep import InvalidInput, ThreadkeepError

__all__ = [
    "CONTACT_EVENTS",
    "DEFAULT_CONTACT_FACTS",
    "MESSAGE_EVENTS",
    "OPPORTUNITY_EVENTS",
    "PUBLISHED_ED25519_KEY",
    "PUBLISHED_RSA_KEY",
    "CustomField",
    "Desired",
    "GhlMap",
    "Pipeline",
    "Plan",
    "SignatureInvalid",
    "Snapshot",
    "StaleDelivery",
    "Verifier",
    "check_timestamp",
    "desired",
    "diff",
    "digest",
    "load_map",
    "parse_event",
]

#: GoHighLevel's published Ed25519 webhook key (Webhook Integration Guide).
PUBLISHED_ED25519_KEY: Final = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=
-----END PUBLIC KEY-----
"""

#: GoHighLevel's published RSA key of the legacy ``X-WH-Signature`` (WebhookAuthentication.md).
PUBLISHED_RSA_KEY: Final = """-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAokvo/r9tVgcfZ5DysOSC
Frm602qYV0MaAiNnX9O8KxMbiyRKWeL9JpCpVpt4XHIcBOK4u3cLSqJGOLaPuXw6
dO0t6Q/ZVdAV5Phz+ZtzPL16iCGeK9po6D6JHBpbi989mmzMryUnQJezlYJ3DVfB
csedpinheNnyYeFXolrJvcsjDtfAeRx5ByHQmTnSdFUzuAnC9/GepgLT9SM4nCpv
uxmZMxrJt5Rw+VUaQ9B8JSvbMPpez4peKaJPZHBbU3OdeCVx5klVXXZQGNHOs8gF
3kvoV5rTnXV0IknLBXlcKKAQLZcY/Q9rG6Ifi9c+5vqlvHPCUJFT5XUGG5RKgOKU
J062fRtN+rLYZUV+BjafxQauvC8wSWeYja63VSUruvmNj8xkx2zE/Juc+yjLjTXp
IocmaiFeAO6fUtNjDeFVkhf5LNb59vECyrHD2SQIrhgXpO4Q3dVNA5rw576PwTzN
h/AMfHKIjE4xQA1SZuYJmNnmVZLIZBlQAF9Ntd03rfadZ+yDiOXCCs9FkHibELhC
HULgCsnuDJHcrGNd5/Ddm5hxGQ0ASitgHeMZ0kcIOwKDOzOU53lDza6/Y09T7sYJ
PQe7z0cvj7aE4B+Ax1ZoZGPzpJlZtGXCsu9aTEGEnKzmsFqwcSsnw3JB31IGKAyk
T1hhTiaCeIY/OwwwNUY2yvcCAwEAAQ==
-----END PUBLIC KEY-----
"""

MESSAGE_EVENTS: Final = frozenset({"InboundMessage", "OutboundMessage"})
CONTACT_EVENTS: Final = frozenset({"ContactCreate", "ContactUpdate", "ContactTagUpdate"})
OPPORTUNITY_EVENTS: Final = frozenset({"OpportunityStageUpdate", "OpportunityStatusUpdate"})

#: Contact fields kept as the contact's facts unless the map says otherwise.
DEFAULT_CONTACT_FACTS: Final = (
    "name",
    "firstName",
    "lastName",
    "email",
    "phone",
    "companyName",
    "source",
    "tags",
    "dnd",
    "assignedTo",
    "city",
    "state",
    "postalCode",
    "country",
    "timezone",
)

_PEM: Final = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


class SignatureInvalid(ThreadkeepError):
    """The webhook's signature is missing or does not verify."""

    http_status = 401


class StaleDelivery(ThreadkeepError):
    """The webhook's timestamp is outside the accepted window (a replay, or a wrong clock)."""

    http_status = 401


def _pem_blocks(text: str, what: str) -> list[bytes]:
    """Return the PEM public keys in ``text`` (PEM text, or a path to a PEM file)."""
    source = text.strip()
    if "-----BEGIN" not in source:
        try:
            source = Path(source).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            message = f"{what}: not PEM text and not a readable file: {exc}"
            raise InvalidInput(message, field=what) from None
    blocks = [m.group(0).encode() for m in _PEM.finditer(source)]
    if not blocks:
        raise InvalidInput(f"{what}: no '-----BEGIN PUBLIC KEY-----' block found", field=what)
    return blocks


class Verifier:
    """Checks GoHighLevel webhook signatures over the raw body.

    Args:
        ed25519: PEM text or a PEM file with one or more Ed25519 public keys (default: the
            published key). Any of them may have signed a delivery (key rotation).
        rsa: PEM text or file of the legacy RSA key; None refuses ``X-WH-Signature``.

    Raises:
        InvalidInput: a key that is not PEM, not readable, or of the wrong type.
    """

    def __init__(self, ed25519: str | None = None, rsa: str | None = None) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

        self._ed25519: list[Ed25519PublicKey] = []
        for block in _pem_blocks(ed25519 or PUBLISHED_ED25519_KEY, "GHL_PUBLIC_KEY"):
            key = serialization.load_pem_public_key(block)
            if not isinstance(key, Ed25519PublicKey):
                raise InvalidInput("GHL_PUBLIC_KEY must be Ed25519 keys", field="GHL_PUBLIC_KEY")
            self._ed25519.append(key)
        self._rsa: list[RSAPublicKey] = []
        for block in _pem_blocks(rsa, "GHL_RSA_PUBLIC_KEY") if rsa else []:
            key = serialization.load_pem_public_key(block)
            if not isinstance(key, RSAPublicKey):
                raise InvalidInput(
                    "GHL_RSA_PUBLIC_KEY must be RSA keys", field="GHL_RSA_PUBLIC_KEY"
                )
            self._rsa.append(key)

    def verify(self, raw: bytes, headers: Mapping[str, str]) -> Literal["ed25519", "rsa"]:
        """Return which scheme verified ``raw``; Ed25519 wins when both headers are present.

        Args:
            raw: the request body exactly as received.
            headers: the request headers (lower-case names).

        Raises:
            SignatureInvalid: no usable signature header, or none of the keys verifies it.
        """
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        signature = headers.get("x-ghl-signature")
        if signature:
            decoded = _b64(signature)
            for key in self._ed25519:
                try:
                    key.verify(decoded, raw)
                    return "ed25519"
                except InvalidSignature:
                    continue
            raise SignatureInvalid("X-GHL-Signature does not verify with the configured key")
        legacy = headers.get("x-wh-signature")
        if legacy and self._rsa:
            decoded = _b64(legacy)
            for rsa_key in self._rsa:
                try:
                    rsa_key.verify(decoded, raw, padding.PKCS1v15(), hashes.SHA256())
                    return "rsa"
                except InvalidSignature:
                    continue
            raise SignatureInvalid("X-WH-Signature does not verify with the configured key")
        raise SignatureInvalid(
            "no X-GHL-Signature header"
            + ("" if self._rsa else " (the legacy X-WH-Signature is not accepted)")
        )


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise SignatureInvalid("the signature header is not base64") from None


def parse_event(raw: bytes) -> dict[str, Any]:
    """Return the webhook's JSON object.

    Raises:
        InvalidInput: not a JSON object with a text ``type``.
    """
    try:
        event = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"the webhook body is not JSON: {exc}", field="body") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise InvalidInput('the webhook body is not a JSON object with a "type"', field="type")
    return event


def _parse_time(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be an ISO 8601 time", field=name)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} {value!r} is not an ISO 8601 time", field=name) from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{name} {value!r} has no time zone", field=name)
    return parsed


def check_timestamp(event: Mapping[str, Any], now: datetime, max_age: float) -> None:
    """Refuse a delivery whose ``timestamp`` is more than ``max_age`` seconds from ``now``.

    A delivery without ``timestamp`` passes (GoHighLevel documents it on the envelope, not on
    every event); its ``webhookId`` still guards against replays.

    Raises:
        StaleDelivery: the timestamp is outside the window.
        InvalidInput: the timestamp is not an ISO 8601 time with a zone.
    """
    if "timestamp" not in event:
        return
    at = _parse_time(event["timestamp"], "timestamp")
    age = (now - at).total_seconds()
    if abs(age) > max_age:
        raise StaleDelivery(
            f"the webhook's timestamp {event['timestamp']} is {age:.0f} s from now; "
            f"deliveries more than {max_age:.0f} s away are refused as replays"
        )


def digest(value: Any) -> str:
    """Return a short, stable hash of a JSON value (what the outbox keeps instead of values)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ---- the map ------------------------------------------------------------------------------


class CustomField(BaseModel):
    """A GoHighLevel custom field, by ``id`` or by ``key`` (one of them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str | None = None
    key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _text_is_an_id(cls, data: Any) -> Any:
        return {"id": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one(self) -> CustomField:
        if (self.id is None) == (self.key is None):
            raise ValueError("give a custom field's id or its key (one of them)")
        return self

    @property
    def ref(self) -> str:
        """``id:<id>`` or ``key:<key>``: how the outbox names the field."""
        return f"id:{self.id}" if self.id is not None else f"key:{self.key}"

    def write(self, value: Any) -> dict[str, Any]:
        """Return the item of ``PUT /contacts/{id}``'s ``customFields``."""
        name = "id" if self.id is not None else "key"
        return {name: self.id if self.id is not None else self.key, "field_value": value}


class Pipeline(BaseModel):
    """The pipeline a conversation's opportunity moves through.

    Attributes:
        id: the pipeline's id.
        stages: playbook stage → pipeline stage id (used both ways).
        inbound: more pipeline stage ids → playbook stage (inbound only).
        opportunity_name: the name of an opportunity the outbox creates (``{contact_id}``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    stages: dict[str, str] = Field(default_factory=dict)
    inbound: dict[str, str] = Field(default_factory=dict)
    opportunity_name: str = "Lead {contact_id}"

    def playbook_stage(self, pipeline_stage_id: str) -> str | None:
        """Return the playbook stage of a pipeline stage id (None when unmapped)."""
        if pipeline_stage_id in self.inbound:
            return self.inbound[pipeline_stage_id]
        return next((s for s, p in self.stages.items() if p == pipeline_stage_id), None)


class GhlMap(BaseModel):
    """What threadkeep and GoHighLevel map to each other (the ``GHL_MAP`` file).

    Attributes:
        fields: state field → custom field (its id, or ``{key: …}``); written when they change,
            and read back from contact webhooks (by id) into the contact's facts.
        pipeline: playbook stage ↔ pipeline stage.
        tags: playbook stage → tags the contact carries while in it (tags named anywhere here
            are managed: added and removed; others are never touched).
        contact_facts: contact fields kept as facts from contact webhooks.
        fact_tier: the memory tier of those facts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fields: dict[str, CustomField] = Field(default_factory=dict)
    pipeline: Pipeline | None = None
    tags: dict[str, list[str]] = Field(default_factory=dict)
    contact_facts: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTACT_FACTS))
    fact_tier: Literal["critical", "high", "medium", "low"] = "critical"

    @property
    def managed_tags(self) -> frozenset[str]:
        """Every tag the map names."""
        return frozenset(t for tags in self.tags.values() for t in tags)

    def field_of(self, custom_field_id: str) -> str | None:
        """Return the state field mapped to a custom field id (None when unmapped)."""
        return next((n for n, f in self.fields.items() if f.id == custom_field_id), None)


def load_map(path: str | Path | None) -> GhlMap:
    """Load ``GHL_MAP`` (a YAML or JSON file); None gives an empty map (facts only).

    Raises:
        InvalidInput: the file cannot be read or parsed, or names a wrong field.
    """
    if path is None or str(path) == "":
        return GhlMap()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # OSError, JSON or YAML errors: all mean "fix the file"
        raise InvalidInput(f"cannot read GHL_MAP {path}: {exc}", field="GHL_MAP") from None
    try:
        return GhlMap.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"GHL_MAP {path}: {where}: {message}", field=where) from None


# ---- desired values and the changes to send -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Desired:
    """The CRM values a conversation should have: custom fields, managed tags, pipeline stage."""

    fields: dict[str, tuple[CustomField, Any]] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    pipeline_stage: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the outbox last wrote for a contact (kept in the store; values only as digests).

    Attributes:
        fields: custom field ref → digest of the value written.
        tags: managed tags put on the contact.
        pipeline_stage: the pipeline stage id last written or seen.
        opportunity: the contact's opportunity id, once known.
        recent_stages: pipeline stage ids written lately, newest last (echo detection).
    """

    fields: dict[str, str] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    pipeline_stage: str | None = None
    opportunity: str | None = None
    recent_stages: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the snapshot as JSON."""
        return {
            "fields": dict(self.fields),
            "tags": sorted(self.tags),
            "pipeline_stage": self.pipeline_stage,
            "opportunity": self.opportunity,
            "recent_stages": list(self.recent_stages),
        }

    @classmethod
    def from_json(cls, data: Any) -> Snapshot:
        """Return a snapshot from its JSON (an empty one for anything else)."""
        if not isinstance(data, dict):
            return cls()
        return cls(
            fields={str(k): str(v) for k, v in (data.get("fields") or {}).items()},
            tags=frozenset(data.get("tags") or ()),
            pipeline_stage=data.get("pipeline_stage"),
            opportunity=data.get("opportunity"),
            recent_stages=tuple(data.get("recent_stages") or ()),
        )

    def with_stage(self, stage_id: str, *, written: bool) -> Snapshot:
        """Return the snapshot after a stage was written (``written``) or seen in GoHighLevel."""
        recent = self.recent_stages
        if written:
            recent = (*[s for s in recent if s != stage_id], stage_id)[-RECENT_WRITES:]
        return Snapshot(self.fields, self.tags, stage_id, self.opportunity, recent)


#: How many recent pipeline-stage writes are remembered to recognise their echo webhooks.
RECENT_WRITES: Final = 5


@dataclass(frozen=True, slots=True)
class Plan:
    """The changes to send for one contact.

    Attributes:
        custom_fields: ``customFields`` items of ``PUT /contacts/{id}`` (empty: no call).
        digests: custom field ref → digest, to record once the PUT succeeded.
        add_tags: tags to add; remove_tags: managed tags to remove.
        pipeline_stage: the pipeline stage id to move the opportunity to (None: no move).
    """

    custom_fields: list[dict[str, Any]] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    add_tags: list[str] = field(default_factory=list)
    remove_tags: list[str] = field(default_factory=list)
    pipeline_stage: str | None = None

    @property
    def empty(self) -> bool:
        """Whether nothing needs sending."""
        return not (self.custom_fields or self.add_tags or self.remove_tags or self.pipeline_stage)


def desired(gmap: GhlMap, stage: str | None, state: Any) -> Desired:
    """Return the CRM values a conversation in ``stage`` with ``state`` should have.

    State fields that are unset (absent or None) are not written: the CRM keeps its value.
    """
    values = state if isinstance(state, Mapping) else {}
    fields = {
        cf.ref: (cf, values[name])
        for name, cf in gmap.fields.items()
        if values.get(name) is not None
    }
    tags = frozenset(gmap.tags.get(stage or "", ()))
    pipeline_stage = None
    if gmap.pipeline is not None and stage is not None:
        pipeline_stage = gmap.pipeline.stages.get(stage)
    return Desired(fields, tags, pipeline_stage)


def diff(want: Desired, have: Snapshot, managed: Iterable[str]) -> Plan:
    """Return what must be sent so the contact has ``want``, given it last had ``have``."""
    items: list[dict[str, Any]] = []
    digests: dict[str, str] = {}
    for ref, (cf, value) in sorted(want.fields.items()):
        value_digest = digest(value)
        if have.fields.get(ref) != value_digest:
            items.append(cf.write(value))
            digests[ref] = value_digest
    managed_tags = frozenset(managed)
    return Plan(
        custom_fields=items,
        digests=digests,
        add_tags=sorted(want.tags - have.tags),
        remove_tags=sorted((have.tags - want.tags) & managed_tags),
        pipeline_stage=(
            want.pipeline_stage
            if want.pipeline_stage is not None and want.pipeline_stage != have.pipeline_stage
            else None
        ),
    )
