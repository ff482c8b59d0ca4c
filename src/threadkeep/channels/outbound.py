"""Replies out: WhatsApp Cloud API and Twilio's Messages API, with delivery states kept.

``Sender.deliver`` takes a reply the processor stored (it is ``queued`` from the start) and:

1. refuses it without a request when the WhatsApp 24-hour customer-service window is closed
   (the contact's last message is older than 24 hours): ``failed``, with a reason saying a
   template is needed; a reply older than ``stale_after`` is not sent either;
2. records that a send is being attempted (``queued`` with ``attempted_at``), then sends:
   ``POST {WHATSAPP_API_URL}/{phone-number-id}/messages`` or ``POST {TWILIO_API_URL}/
   2010-04-01/Accounts/{sid}/Messages.json``, retrying 429, 5xx and connection errors with
   backoff (tenacity, ``attempts`` in all);
3. records ``sent`` with the provider's message id, or ``failed`` with the provider's reason.

What a crash can and cannot guarantee: the providers have no idempotency key for sends, so a
send whose outcome was not recorded (the process died during the request, or after it and
before ``sent`` was stored) cannot be told apart from one that never left. Such a reply
(``queued`` with ``attempted_at`` and no provider id) is never sent again: it is marked
``failed`` ("outcome unknown") — at most one send per reply, possibly none. A reply that was
stored but whose send was not attempted yet (no ``attempted_at``) is sent by whichever
processor takes the conversation's next turn. Status webhooks find the reply by the reference
sent with it (``biz_opaque_callback_data``; the Twilio status callback URL's ``ref``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from threadkeep import AsyncStore, Conversation, ConversationNotFound, InvalidInput, Message
from threadkeep.channels._model import StatusUpdate
from threadkeep.channels.config import ChannelConfig
from threadkeep.channels.inbox import inbound_of, is_unsent_reply

__all__ = ["WINDOW", "Sender", "apply_status", "reference"]

log = logging.getLogger("threadkeep.channels")

#: WhatsApp's customer-service window: free-form replies only this long after the contact's
#: last message (after it, only approved templates).
WINDOW: Final = timedelta(hours=24)
_LOOK_BACK: Final = 200  # messages read back to find the contact's last message


class Observer(Protocol):
    """Counts failed sends (the service's metrics)."""

    def send_failed(self, provider: str, reason: str) -> None:
        """One reply could not be sent."""
        ...


class _Retry(Exception):
    """A response or error worth another attempt (429, 5xx, connection)."""


class _Rejected(Exception):
    """The provider refused the message; sending it again would fail the same way."""


def reference(message: Message) -> str:
    """Return the reference a status webhook carries back: ``conversation_id:seq``."""
    return f"{message.conversation_id}:{message.seq}"


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):  # Graph API
        details = (error.get("error_data") or {}).get("details")
        text = f"{error.get('code')} {error.get('message')}"
        return f"{text} ({details})" if details else text
    if isinstance(body, dict) and "message" in body:  # Twilio
        return f"{body.get('code')} {body.get('message')}"
    return f"HTTP {response.status_code}"


class Sender:
    """Sends replies of channel conversations (the processor's ``Outbound``).

    Args:
        config: API URLs, tokens, ``stale_after`` and ``public_url``.
        client: the HTTP client (default: one of its own, closed by ``aclose``).
        attempts: tries per send (429, 5xx and connection errors are retried).
        backoff: the first retry's wait in seconds (doubling, with jitter, up to 5 s).
        observer: counts failed sends.
    """

    def __init__(
        self,
        config: ChannelConfig,
        *,
        client: httpx.AsyncClient | None = None,
        attempts: int = 4,
        backoff: float = 0.2,
        observer: Observer | None = None,
    ) -> None:
        self.config = config
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
        self.attempts = attempts
        self.backoff = backoff
        self.observer = observer

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def deliver(self, store: AsyncStore, conv: Conversation, reply: Message) -> None:
        """Send ``reply`` once and record how it went (see the module docstring).

        It goes to the contact through the provider and business number of the contact's
        newest inbound message (so a reply leaves from the number the contact last wrote to).
        """
        current = reply.delivery
        if current is not None and current.get("attempted_at") and current["state"] == "queued":
            await self._fail(store, conv, reply, "outcome unknown: the process stopped during "
                             "the send; not sent again, to never send it twice")  # fmt: skip
            return
        if not is_unsent_reply(reply):
            return
        await store.set_delivery(conv.id, reply.seq, "queued", tenant=conv.tenant)
        now = store.clock.now()
        if now - reply.created_at > timedelta(seconds=self.config.stale_after):
            await self._fail(store, conv, reply, "not sent: the reply is older than STALE_AFTER")
            return
        route = await _last_inbound(store, conv)
        if route is None:
            await self._fail(store, conv, reply, "not sent: the contact never wrote on a channel")
            return
        last = datetime.fromisoformat(str(route["provider_timestamp"]))
        if route.get("channel") == "whatsapp" and now - last > WINDOW:
            await self._fail(
                store, conv, reply,
                "outside the 24-hour customer service window (the contact last wrote: "
                f"{last.isoformat()}); only an approved template message can be sent",
                str(route.get("provider")),
            )  # fmt: skip
            return
        await store.set_delivery(conv.id, reply.seq, "queued", attempted=True, tenant=conv.tenant)
        provider = str(route.get("provider"))
        try:
            provider_id = await self._with_retries(route, reply)
        except _Rejected as exc:
            await self._fail(store, conv, reply, f"refused by {provider}: {exc}", provider)
            return
        except _Retry as exc:
            await self._fail(store, conv, reply, f"{provider} unavailable after "
                             f"{self.attempts} attempts: {exc}", provider)  # fmt: skip
            return
        await store.set_delivery(
            conv.id, reply.seq, "sent", provider_id=provider_id, tenant=conv.tenant
        )

    async def _fail(
        self,
        store: AsyncStore,
        conv: Conversation,
        reply: Message,
        why: str,
        provider: str | None = None,
    ) -> None:
        log.warning("reply %s of %s not sent: %s", reply.seq, conv.id, why)
        await store.set_delivery(conv.id, reply.seq, "failed", error=why, tenant=conv.tenant)
        if self.observer is not None:
            self.observer.send_failed(provider or "unknown", why.split(":")[0])

    async def _with_retries(self, route: dict[str, Any], reply: Message) -> str:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff, max=5.0) + wait_random(0, self.backoff),
            retry=retry_if_exception_type(_Retry),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._send(route, reply)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _send(self, route: dict[str, Any], reply: Message) -> str:
        whatsapp = route.get("provider") == "whatsapp"
        try:
            if whatsapp:
                response = await self._whatsapp(route, reply)
            else:
                response = await self._twilio(route, reply)
        except httpx.TransportError as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retry(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise _Rejected(_error_text(response))
        body: Any = response.json()
        try:
            return str(body["messages"][0]["id"]) if whatsapp else str(body["sid"])
        except (KeyError, IndexError, TypeError):
            raise _Rejected(f"unexpected answer: {str(body)[:200]}") from None

    async def _whatsapp(self, route: dict[str, Any], reply: Message) -> httpx.Response:
        phone = route.get("phone")
        to = f"+{phone}" if isinstance(phone, str) and phone.isdigit() else route["contact_id"]
        url = f"{self.config.whatsapp_api_url.rstrip('/')}/{route['account']}/messages"
        return await self.client.post(
            url,
            headers={"Authorization": f"Bearer {self.config.whatsapp_access_token}"},
            json={
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "text",
                "text": {"body": reply.content[:4096]},
                "biz_opaque_callback_data": reference(reply),
            },
        )

    async def _twilio(self, route: dict[str, Any], reply: Message) -> httpx.Response:
        sid = self.config.twilio_account_sid
        prefix = "whatsapp:" if route.get("channel") == "whatsapp" else ""
        form = {
            "To": f"{prefix}{route.get('phone') or route['contact_id']}",
            "From": f"{prefix}{route['account']}",
            "Body": reply.content[:1600],
        }
        if self.config.public_url:
            callback = f"{self.config.public_url.rstrip('/')}/v1/channels/twilio/status"
            form["StatusCallback"] = f"{callback}?ref={reference(reply)}"
        url = f"{self.config.twilio_api_url.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
        return await self.client.post(url, data=form, auth=(sid, self.config.twilio_auth_token))


async def _last_inbound(store: AsyncStore, conv: Conversation) -> dict[str, Any] | None:
    """The normalised record of the contact's newest inbound channel message, or None."""
    for message in reversed(await store.messages(conv.id, last=_LOOK_BACK, tenant=conv.tenant)):
        record = inbound_of(message)
        if record is not None:
            return record
    return None


async def apply_status(store: AsyncStore, status: StatusUpdate) -> str:
    """Apply a status webhook to the reply it names (monotonically: see ``set_delivery``).

    Returns:
        ``matched`` (applied, or a duplicate or late status that changed nothing) or
        ``unmatched`` (no reference, or the reply is gone).

    Raises:
        BackendError: the store failed (the webhook answers 503 and the provider retries).
    """
    conversation_id, _, seq = (status.reference or "").rpartition(":")
    if not conversation_id or not seq.isdigit():
        return "unmatched"
    error = None
    if status.error is not None:
        parts = [str(status.error.code or ""), status.error.title or "", status.error.details or ""]
        error = " ".join(p for p in parts if p)[:2000] or "failed"
    try:
        found = await store.set_delivery(
            conversation_id, int(seq), status.state, provider_id=status.provider_message_id,
            error=error,
        )  # fmt: skip
    except (ConversationNotFound, InvalidInput):
        return "unmatched"
    return "unmatched" if found is None else "matched"
