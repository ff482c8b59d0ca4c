"""What the channel routes, the processor and the senders are told: ``ChannelConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from threadkeep import InvalidInput

if TYPE_CHECKING:
    from threadkeep.service.settings import ServiceSettings

__all__ = ["DEFAULT_TENANT", "ChannelConfig", "channel_config", "parse_tenants"]

DEFAULT_TENANT: Final = "default"


def parse_tenants(text: str, what: str) -> dict[str, str]:
    """Parse ``number:tenant`` pairs separated by commas or whitespace.

    Raises:
        InvalidInput: a pair without ``:``, or with an empty side.
    """
    out: dict[str, str] = {}
    for pair in text.replace(",", " ").split():
        number, sep, tenant = pair.rpartition(":")
        if not sep or not number or not tenant:
            raise InvalidInput(f"{what} takes number:tenant pairs, not {pair!r}", field=what)
        out[number] = tenant
    return out


@dataclass(frozen=True)
class ChannelConfig:
    """The channels' settings (see ``ServiceSettings`` for each one's variable).

    A channel is on when its secret is set: WhatsApp with the app secret, Twilio with the auth
    token; a channel that is off answers 404.
    """

    whatsapp_verify_token: str = field(default="", repr=False)
    whatsapp_app_secret: str = field(default="", repr=False)
    whatsapp_access_token: str = field(default="", repr=False)
    whatsapp_api_url: str = "https://graph.facebook.com/v25.0"
    whatsapp_tenants: dict[str, str] = field(default_factory=dict)
    twilio_account_sid: str = ""
    twilio_auth_token: str = field(default="", repr=False)
    twilio_api_url: str = "https://api.twilio.com"
    twilio_tenants: dict[str, str] = field(default_factory=dict)
    public_url: str = ""
    stale_after: float = 86400.0
    lease: float = 30.0

    @property
    def whatsapp_on(self) -> bool:
        """Whether WhatsApp webhooks are taken."""
        return bool(self.whatsapp_app_secret)

    @property
    def twilio_on(self) -> bool:
        """Whether Twilio webhooks are taken."""
        return bool(self.twilio_auth_token)

    def tenant_for(self, provider: str, account: str) -> str:
        """Return the tenant of a business number (``default`` when it is not listed)."""
        tenants = self.whatsapp_tenants if provider == "whatsapp" else self.twilio_tenants
        return tenants.get(account, DEFAULT_TENANT)


def channel_config(settings: ServiceSettings) -> ChannelConfig:
    """Build the channels' configuration from the service settings.

    Raises:
        InvalidInput: a malformed ``WHATSAPP_TENANTS`` or ``TWILIO_TENANTS``.
    """
    return ChannelConfig(
        whatsapp_verify_token=settings.whatsapp_verify_token,
        whatsapp_app_secret=settings.whatsapp_app_secret,
        whatsapp_access_token=settings.whatsapp_access_token,
        whatsapp_api_url=settings.whatsapp_api_url,
        whatsapp_tenants=parse_tenants(settings.whatsapp_tenants, "THREADKEEP_WHATSAPP_TENANTS"),
        twilio_account_sid=settings.twilio_account_sid,
        twilio_auth_token=settings.twilio_auth_token,
        twilio_api_url=settings.twilio_api_url,
        twilio_tenants=parse_tenants(settings.twilio_tenants, "THREADKEEP_TWILIO_TENANTS"),
        public_url=settings.public_url,
        stale_after=settings.stale_after,
        lease=settings.channel_lease,
    )
