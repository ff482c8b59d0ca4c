"""GoHighLevel sync through the store: inbound webhooks applied, outbound changes reconciled.

Everything durable lives in the store itself, in a tenant of its own (``ghl-sync`` by default,
never served to an API key), as contact facts of pseudo-contacts:

- ``webhooks:<locationId>``: one ``low``-tier fact per ``webhookId`` seen (kept 24 hours, far
  longer than the timestamp window), so a replayed delivery is refused.
- ``contact:<locationId>:<contactId>``: the outbox's ``Snapshot`` of what it last wrote (values
  only as digests).
- ``outbox``: the cursor in the store's event log up to which every change was handled, and
  the OAuth tokens after a refresh.

The outbox is level-triggered: a worker follows the event log (``stage.changed``,
``state.saved``, ``conversation.started``), computes for each changed conversation what its
contact should have in GoHighLevel, and sends only the difference from the snapshot. The
cursor moves past an event only once its changes were delivered (or refused for good), so a
change made while GoHighLevel is down is delivered when it is back, also after a restart; when
the cursor fell out of the log the worker rescans every conversation of the mapped tenants.
One worker at a time runs it, under a turn lease on the ``outbox`` conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from threadkeep import (
    AsyncStore,
    BackendError,
    Conversation,
    ConversationClosed,
    ConversationNotFound,
    CursorExpired,
    Event,
    InvalidInput,
    Retention,
    TurnInProgress,
)
from threadkeep.crm.client import GhlClient, GhlRejected, GhlUnavailable, OAuthTokens
from threadkeep.crm.ghl import (
    CONTACT_EVENTS,
    MESSAGE_EVENTS,
    OPPORTUNITY_EVENTS,
    GhlMap,
    Plan,
    Snapshot,
    desired,
    diff,
    digest,
)

__all__ = ["DEFAULT_SYNC_TENANT", "Ledger", "Outbox", "apply_event", "oauth_saver"]

log = logging.getLogger("threadkeep.crm")

DEFAULT_SYNC_TENANT: Final = "ghl-sync"
#: Event kinds after which a conversation's CRM values may have changed.
TRIGGERS: Final = frozenset({"conversation.started", "stage.changed", "state.saved"})
_FOREVER: Final = Retention(ttl=None)


class Ledger:
    """The sync's durable records, kept as facts in the sync tenant (see the module docstring).

    Args:
        store: the store.
        tenant: the sync's own tenant.
    """

    def __init__(self, store: AsyncStore, tenant: str = DEFAULT_SYNC_TENANT) -> None:
        self.store = store
        self.tenant = tenant

    async def seen(self, location: str, webhook_id: str) -> bool:
        """Return whether this delivery was handled before."""
        return bool(await self.store.recall(f"webhooks:{location}", webhook_id, tenant=self.tenant))

    async def mark_seen(self, location: str, webhook_id: str, kind: str) -> None:
        """Record a handled delivery (kept 24 hours)."""
        await self.store.remember(
            f"webhooks:{location}", webhook_id, kind, tenant=self.tenant, tier="low"
        )

    async def snapshot(self, location: str, contact: str) -> Snapshot:
        """Return what the outbox last wrote for a contact."""
        facts = await self.store.recall(
            f"contact:{location}:{contact}", "synced", tenant=self.tenant
        )
        return Snapshot.from_json(facts[0].value if facts else None)

    async def save_snapshot(self, location: str, contact: str, snapshot: Snapshot) -> None:
        """Record what the outbox wrote for a contact."""
        await self.store.remember(
            f"contact:{location}:{contact}",
            "synced",
            snapshot.to_json(),
            tenant=self.tenant,
            tier="critical",
        )

    async def forget(self, location: str, contact: str) -> int:
        """Erase what the outbox recorded for a contact (its snapshot); return facts erased."""
        receipt = await self.store.delete_contact(
            f"contact:{location}:{contact}", tenant=self.tenant
        )
        return receipt.facts

    async def get(self, key: str) -> Any:
        """Return one of the outbox's own records (``cursor``, ``oauth``), or None."""
        facts = await self.store.recall("outbox", key, tenant=self.tenant)
        return facts[0].value if facts else None

    async def put(self, key: str, value: Any) -> None:
        """Keep one of the outbox's own records."""
        await self.store.remember("outbox", key, value, tenant=self.tenant, tier="critical")

    async def lease_conversation(self) -> str:
        """Return the id of the conversation whose turn lease makes one outbox worker run."""
        conv = await self.store.resume(
            "outbox", tenant=self.tenant, channel="ghl", retention=_FOREVER
        )
        return conv.id


# ---- inbound ------------------------------------------------------------------------------

_CHANNELS: Final = {"SMS": "sms", "WhatsApp": "whatsapp", "Email": "email", "Live_Chat": "web"}


async def apply_event(
    store: AsyncStore, ledger: Ledger, gmap: GhlMap, event: dict[str, Any], tenant: str
) -> str:
    """Apply one verified webhook to the store; return what was done, for the response.

    Messages land in the contact's open conversation (stored once per ``messageId``), contact
    events in the contact's facts, opportunity stage changes in its conversation's stage
    (through the map; echoes of the outbox's own writes are ignored).

    Raises:
        BackendError: the store cannot take it (the route answers 429, so GoHighLevel retries).
        InvalidInput: the event lacks a field it needs.
    """
    kind = event["type"]
    inbound = _Inbound(store, ledger, gmap, tenant, str(event.get("locationId") or ""))
    if kind in MESSAGE_EVENTS:
        return await _message(store, event, tenant)
    if kind in CONTACT_EVENTS:
        return await _contact(inbound, event)
    if kind in OPPORTUNITY_EVENTS:
        return await _opportunity(inbound, event)
    return "ignored"


@dataclass(frozen=True, slots=True)
class _Inbound:
    """Where an inbound event is applied."""

    store: AsyncStore
    ledger: Ledger
    gmap: GhlMap
    tenant: str
    location: str


def _require(event: dict[str, Any], name: str) -> str:

    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{event['type']} webhook without {name}", field=name)
    return value


async def _message(store: AsyncStore, event: dict[str, Any], tenant: str) -> str:
    contact = _require(event, "contactId")
    message_type = str(event.get("messageType") or "")
    body = event.get("body")
    text = body if isinstance(body, str) and body.strip() else ""
    if not text:  # a call, a voicemail or an attachment: say what it was
        text = f"[{message_type.lower() or 'message'} {event.get('status') or ''}]".replace(
            " ]", "]"
        )
    key = event.get("messageId") or event.get("webhookId") or digest(event)
    details = {
        k: event[k]
        for k in ("messageId", "messageType", "conversationId", "dateAdded", "attachments")
        if k in event
    }
    role = "user" if event["type"] == "InboundMessage" else "agent"
    for _ in range(2):  # a conversation closed in between: the next resume starts a new one
        conv = await store.resume(
            contact,
            tenant=tenant,
            channel=_CHANNELS.get(message_type, message_type.lower() or None),
            metadata={"ghl": {"locationId": event.get("locationId")}},
        )
        try:
            msg = await store.append(
                conv.id, role, text, metadata={"ghl": details}, idempotency_key=f"ghl:{key}"
            )
        except ConversationClosed:
            continue
        return f"message {msg.seq} in {conv.id}"
    raise BackendError("the contact's conversation closed twice while storing a message")


async def _contact(inbound: _Inbound, event: dict[str, Any]) -> str:
    store, gmap, tenant = inbound.store, inbound.gmap, inbound.tenant
    contact = str(event.get("id") or _require(event, "contactId"))
    snapshot = await inbound.ledger.snapshot(inbound.location, contact)
    source = {
        "kind": "crm",
        "crm": "gohighlevel",
        "event": event["type"],
        "webhook_id": event.get("webhookId"),
        "location_id": inbound.location,
    }
    kept: list[str] = []
    for name in gmap.contact_facts:
        if name in event and event[name] is not None:
            await store.remember(
                contact, name, event[name], tenant=tenant, tier=gmap.fact_tier, source=source
            )
            kept.append(name)
    for item in event.get("customFields") or []:
        if not isinstance(item, dict):
            continue
        field = gmap.field_of(str(item.get("id")))
        if field is None:
            continue
        if snapshot.fields.get(f"id:{item['id']}") == digest(item.get("value")):
            continue  # the echo of the outbox's own write
        await store.remember(
            contact,
            field,
            item.get("value"),
            tenant=tenant,
            tier=gmap.fact_tier,
            source={**source, "custom_field": item["id"]},
        )
        kept.append(field)
    return f"facts {', '.join(kept) or 'none'}"


async def _opportunity(inbound: _Inbound, event: dict[str, Any]) -> str:
    store, ledger, tenant, location = (
        inbound.store,
        inbound.ledger,
        inbound.tenant,
        inbound.location,
    )
    contact = _require(event, "contactId")
    stage_id = str(event.get("pipelineStageId") or "")
    pipeline = inbound.gmap.pipeline
    if pipeline is None or event.get("pipelineId") != pipeline.id:
        return "ignored: not the mapped pipeline"
    stage = pipeline.playbook_stage(stage_id)
    if stage is None:
        return f"ignored: pipeline stage {stage_id} is not mapped"
    snapshot = await ledger.snapshot(location, contact)
    if stage_id in snapshot.recent_stages:
        return "ignored: echo of our own write"
    conv = await store.resume(contact, tenant=tenant, stage=stage)
    if conv.stage != stage:
        await store.set_stage(conv.id, stage, tenant=tenant)
    seen = snapshot.with_stage(stage_id, written=False)
    if event.get("id"):
        seen = dataclasses.replace(seen, opportunity=str(event["id"]))
    await ledger.save_snapshot(location, contact, seen)
    return f"stage {stage} in {conv.id}"


# ---- outbound -----------------------------------------------------------------------------


@dataclass
class _Pass:
    """One pass of the worker: when it must stop taking work."""

    deadline: float


class Outbox:
    """Keeps GoHighLevel contacts in step with their conversations (see the module docstring).

    Args:
        store_getter: returns the open store (it may raise BackendError while it is down).
        client: the GoHighLevel client.
        gmap: the field, stage and tag map.
        locations: locationId → tenant.
        tenant: the sync's own tenant.
        lease: seconds a worker's turn lease lasts; a pass stops starting work at 60 % of it.
        idle: seconds to wait for new events before ending a pass.
        retry: seconds to wait after a pass that could not deliver everything.
    """

    def __init__(
        self,
        store_getter: Callable[[], Awaitable[AsyncStore]],
        client: GhlClient,
        gmap: GhlMap,
        locations: dict[str, str],
        *,
        tenant: str = "ghl-sync",
        lease: float = 60.0,
        idle: float = 2.0,
        retry: float = 5.0,
    ) -> None:
        self.store_getter = store_getter
        self.client = client
        self.gmap = gmap
        self.locations = dict(locations)
        self.tenants = {t: loc for loc, t in self.locations.items()}
        self.tenant = tenant
        self.lease = lease
        self.idle = idle
        self.retry = retry

    async def run(self, stop: asyncio.Event) -> None:
        """Run passes until ``stop`` is set (one worker at a time holds the lease)."""
        while not stop.is_set():
            pause = self.retry
            try:
                store = await self.store_getter()
                ledger = Ledger(store, self.tenant)
                await self._load_tokens(ledger)
                lease_id = await ledger.lease_conversation()
                async with store.turn(lease_id, lease=self.lease, timeout=0, tenant=self.tenant):
                    caught_up = await self.run_pass(store, ledger)
                pause = 0.0 if caught_up else self.retry
            except TurnInProgress:
                pass  # another worker runs the outbox
            except BackendError as exc:
                log.warning("GoHighLevel outbox: the store is unavailable: %s", exc)
            except Exception:  # never let the worker die; log and try again later
                log.exception("GoHighLevel outbox pass failed")
            if pause:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    async def _load_tokens(self, ledger: Ledger) -> None:
        """Take the OAuth tokens of the last refresh (GoHighLevel rotates refresh tokens)."""
        oauth = self.client.oauth
        saved = await ledger.get("oauth") if oauth is not None else None
        if (
            oauth is not None
            and isinstance(saved, dict)
            and saved.get("refresh_token") not in (None, oauth.refresh_token)
        ):
            self.client.oauth = OAuthTokens(
                oauth.client_id,
                oauth.client_secret,
                str(saved["refresh_token"]),
                str(saved.get("access_token") or ""),
            )
            self.client.token = self.client.oauth.access_token

    async def run_pass(self, store: AsyncStore, ledger: Ledger) -> bool:
        """Handle the changes since the durable cursor; return whether all were delivered.

        Raises:
            BackendError: the store failed (the cursor stays where it was).
        """
        work = _Pass(time.monotonic() + 0.6 * self.lease)
        saved = await ledger.get("cursor")
        if not isinstance(saved, dict):
            return await self._rescan(store, ledger, work)
        cursor: str | None = saved.get("after")
        try:
            async for event in store.events(after=cursor, timeout=self.idle):
                if time.monotonic() > work.deadline:
                    break
                # Level-triggered: each change re-reads the conversation as it is now, so a
                # conversation changed twice is simply synced twice (the second sends nothing).
                if (
                    event.tenant in self.tenants
                    and event.kind in TRIGGERS
                    and not await self._sync_id(store, ledger, event, work)
                ):
                    await ledger.put("cursor", {"after": cursor})
                    return False
                cursor = event.id
        except CursorExpired:
            log.warning("GoHighLevel outbox: the cursor fell out of the event log; rescanning")
            await ledger.put("cursor", None)
            return await self._rescan(store, ledger, work)
        await ledger.put("cursor", {"after": cursor})
        return True

    async def _head(self, store: AsyncStore) -> str | None:
        """Return the newest event id now (None: the log is empty)."""
        head = None
        async for event in store.events(timeout=0):
            head = event.id
        return head

    async def _rescan(self, store: AsyncStore, ledger: Ledger, work: _Pass) -> bool:
        head = await self._head(store)
        for tenant in sorted(self.tenants):
            page_cursor: str | None = None
            while True:
                page = await store.list(tenant=tenant, limit=200, cursor=page_cursor)
                for conv in page.items:
                    if time.monotonic() > work.deadline:
                        return False
                    if not await self._sync(store, ledger, conv, work):
                        return False
                page_cursor = page.next_cursor
                if page_cursor is None:
                    break
        await ledger.put("cursor", {"after": head})
        log.info("GoHighLevel outbox: rescan done")
        return True

    async def _sync_id(self, store: AsyncStore, ledger: Ledger, event: Event, work: _Pass) -> bool:
        try:
            conv = await store.get(event.conversation_id)
        except ConversationNotFound:
            return True  # erased or expired meanwhile: nothing to send
        return await self._sync(store, ledger, conv, work)

    async def _sync(
        self, store: AsyncStore, ledger: Ledger, conv: Conversation, work: _Pass
    ) -> bool:
        """Send what the conversation's contact lacks; False when GoHighLevel is unavailable."""
        location = self.tenants.get(conv.tenant)
        if location is None:
            return True
        snap = await store.load_state(conv.id, tenant=conv.tenant)
        want = desired(self.gmap, conv.stage, snap.value)
        have = await ledger.snapshot(location, conv.contact_id)
        plan = diff(want, have, self.gmap.managed_tags)
        if plan.empty:
            return True
        try:
            await self._send(ledger, location, conv.contact_id, plan, have, work)
        except GhlUnavailable as exc:
            log.warning("GoHighLevel unavailable; contact %s waits: %s", conv.contact_id, exc)
            return False
        except GhlRejected as exc:
            log.error("GoHighLevel refused a change of contact %s: %s", conv.contact_id, exc)
        return True

    async def _send(
        self,
        ledger: Ledger,
        location: str,
        contact: str,
        plan: Plan,
        have: Snapshot,
        work: _Pass,
    ) -> None:
        """Send a plan's calls, recording each success in the snapshot as it lands."""
        call = self.client.request
        path = f"/contacts/{contact}"
        if plan.custom_fields:
            await call(
                "PUT",
                path,
                location=location,
                json={"customFields": plan.custom_fields},
                deadline=work.deadline,
            )
            have = dataclasses.replace(have, fields={**have.fields, **plan.digests})
            await ledger.save_snapshot(location, contact, have)
        if plan.add_tags:
            await call(
                "POST",
                f"{path}/tags",
                location=location,
                json={"tags": plan.add_tags},
                deadline=work.deadline,
            )
        if plan.remove_tags:
            await call(
                "DELETE",
                f"{path}/tags",
                location=location,
                json={"tags": plan.remove_tags},
                deadline=work.deadline,
            )
        if plan.add_tags or plan.remove_tags:
            tags = (have.tags | set(plan.add_tags)) - set(plan.remove_tags)
            have = dataclasses.replace(have, tags=frozenset(tags))
            await ledger.save_snapshot(location, contact, have)
        if plan.pipeline_stage is not None:
            have = await self._move(ledger, location, contact, plan.pipeline_stage, have, work)
            await ledger.save_snapshot(location, contact, have)

    async def _move(
        self,
        ledger: Ledger,
        location: str,
        contact: str,
        stage_id: str,
        have: Snapshot,
        work: _Pass,
    ) -> Snapshot:
        pipeline = self.gmap.pipeline
        assert pipeline is not None
        opportunity = have.opportunity
        if opportunity is None:
            found = await self.client.request(
                "GET",
                "/opportunities/search",
                location=location,
                params={"location_id": location, "contact_id": contact, "pipeline_id": pipeline.id},
                deadline=work.deadline,
            )
            mine = [
                o
                for o in (found or {}).get("opportunities", [])
                if o.get("pipelineId") == pipeline.id
            ]
            opportunity = str(mine[0]["id"]) if mine else None
        if opportunity is None:
            # A create whose answer was lost is found by the search of the next pass.
            created = await self.client.request(
                "POST",
                "/opportunities/",
                location=location,
                deadline=work.deadline,
                json={
                    "pipelineId": pipeline.id,
                    "locationId": location,
                    "contactId": contact,
                    "pipelineStageId": stage_id,
                    "status": "open",
                    "name": pipeline.opportunity_name.format(contact_id=contact),
                },
            )
            opportunity = str(created["opportunity"]["id"])
        else:
            await self.client.request(
                "PUT",
                f"/opportunities/{opportunity}",
                location=location,
                deadline=work.deadline,
                json={"pipelineId": pipeline.id, "pipelineStageId": stage_id},
            )
        return dataclasses.replace(have.with_stage(stage_id, written=True), opportunity=opportunity)


def oauth_saver(
    ledger_for: Callable[[], Awaitable[Ledger]],
) -> Callable[[OAuthTokens], Awaitable[None]]:
    """Return an ``on_tokens`` callback that keeps refreshed OAuth tokens in the ledger."""

    async def save(tokens: OAuthTokens) -> None:
        ledger = await ledger_for()
        await ledger.put(
            "oauth", {"refresh_token": tokens.refresh_token, "access_token": tokens.access_token}
        )

    return save
