"""The service's settings, read from ``THREADKEEP_*`` environment variables.

API keys map to tenants. They come from ``THREADKEEP_API_KEYS`` (``tenant:key`` pairs separated
by commas or whitespace) and/or the JSON file named by ``THREADKEEP_API_KEYS_FILE`` (an object
``{"key": "tenant"}``). A key may be given as its hash, ``sha256:`` and 64 hex digits (what
``threadkeep api-key`` prints), so the file holds no key a reader could use. With no key
configured the service serves loopback clients only, all as tenant ``default``.

``load_settings()`` turns a bad value into one line naming the variable and the rule, and
``unknown_variables()`` names ``THREADKEEP_*`` variables that are no field of the class (a typo):
both are driven by the class's fields, so a new setting is one new field.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Final

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from threadkeep import (
    DEFAULT_LIMITS,
    DEFAULT_RETENTION,
    DEFAULT_STORE_URL,
    Encryption,
    InvalidInput,
    Limits,
    Retention,
)

__all__ = [
    "HASHED",
    "PREFIX",
    "ServiceSettings",
    "get_settings",
    "hash_key",
    "is_loopback",
    "load_settings",
    "unknown_variables",
]

#: Every setting is this prefix followed by the field's name in capitals.
PREFIX: Final = "THREADKEEP_"
#: Variables of that prefix read by other parts of threadkeep (not service settings).
_OTHER_VARIABLES: Final = frozenset({"THREADKEEP_SCREENSHOTS"})
_DEFAULT_TTL: Final = DEFAULT_RETENTION.ttl.total_seconds() if DEFAULT_RETENTION.ttl else None

#: A configured API key that starts with this is the SHA-256 (hex) of the key.
HASHED: Final = "sha256:"
_HASH = re.compile(r"[0-9a-f]{64}")

#: The shortest visitor secret accepted.
MIN_SECRET: Final = 32


class ServiceSettings(BaseSettings):
    """Everything the service can be told; each field is ``THREADKEEP_<NAME>`` in the environment.

    Attributes:
        store: the store URL.
        host: the address the server binds (checked: non-loopback needs API keys).
        port: the port the server listens on.
        workers: worker processes.
        bot: the bot of ``POST /v1/chat``: ``seller`` (the demo bot), ``echo``, or an import
            string ``package.module:attribute`` (a bot, or a function returning one).
        api_keys: ``tenant:key`` pairs, separated by commas or whitespace; a key may be its
            hash, ``sha256:<64 hex digits>``.
        api_keys_file: a JSON file ``{"key": "tenant"}`` (keys as above).
        rate_limit: requests per ``rate_window`` per API key, per worker (0: no limit).
        visitor_rate_limit: requests per ``rate_window`` per visitor (its contact, or the
            client's address before it has one), per worker (0: no limit).
        rate_window: the rate limits' window in seconds.
        max_body_bytes: largest request body; larger ones get 413.
        max_header_bytes: largest request head (request line and headers); larger ones get
            431 and the connection is closed (``threadkeep serve``).
        request_timeout: seconds a request (head and body) may take to arrive, from its first
            byte or from the connection opening; slower ones get 408 and the connection is
            closed (``threadkeep serve``).
        keep_alive: seconds an idle kept-alive connection stays open (``threadkeep serve``).
        worker_healthcheck: seconds a worker of ``threadkeep serve --workers N`` has to answer
            its supervisor's health ping before it is killed and replaced.
        turn_lease: seconds a chat turn's lease lasts if its worker dies.
        turn_wait: seconds a second message for a busy conversation waits before 409.
        sse_heartbeat: seconds between SSE heartbeat comments.
        ready_timeout: seconds ``/readyz`` waits for the store.
        events_kept: how many of the newest events the store's log retains.
        log_level: the service's log level.
        cors_origins: origins (``https://site.example``) whose pages may call the API,
            separated by commas; ``*`` allows any. Empty: same origin only.
        ttl: seconds a conversation lives after its last activity (``none``: until deleted).
        idle_after: seconds without activity before an active conversation becomes idle.
        window: how many recent messages the bot reads as context.
        public_chat: whether ``POST /v1/chat`` without an API key is allowed (a visitor on a
            public site); it answers with a visitor token scoped to that one conversation.
        public_tenant: the tenant of visitors' conversations.
        visitor_secret: signs visitor tokens (needed with ``public_chat``): a random string of
            32 characters or more; several, separated by commas, rotate secrets (the first
            signs, every one is accepted). Every worker must have the same.
        visitor_token_ttl: seconds a visitor token stays valid after it was issued (each chat
            turn issues a fresh one).
        playbook: the default playbook: a shipped name (``seller``, ``realtor``) or a file.
        playbooks: tenants with their own playbook, ``tenant:name-or-path`` pairs.
        ghl_locations: GoHighLevel ``locationId:tenant`` pairs; none: GoHighLevel is off (404).
        ghl_public_key: PEM text or file of the webhook Ed25519 key(s); empty: GoHighLevel's
            published key.
        ghl_rsa_public_key: PEM text or file of the legacy ``X-WH-Signature`` RSA key
            (``published``: GoHighLevel's); empty: the legacy header is refused.
        ghl_max_age: seconds a webhook's timestamp may be from now.
        ghl_token: a Private Integration (or access) token for the outbox.
        ghl_client_id: OAuth client id (with the secret and a refresh token instead of a token).
        ghl_client_secret: OAuth client secret.
        ghl_refresh_token: OAuth refresh token.
        ghl_api_url: the REST API's base URL.
        ghl_version: the ``Version`` header of the contacts and opportunities calls.
        ghl_map: the map file (YAML or JSON): state fields, pipeline stages, tags, facts.
        ghl_rate_limit: requests per ``ghl_rate_window`` seconds per location.
        ghl_rate_window: the rate limit's window in seconds.
        ghl_retry: seconds between outbox passes while GoHighLevel is unavailable.
        ghl_sync_tenant: the tenant where the sync keeps its records (never give it a key).
        whatsapp_verify_token: the verify token of the WhatsApp webhook handshake.
        whatsapp_app_secret: the Meta app secret (``X-Hub-Signature-256``); empty: WhatsApp
            is off (404).
        whatsapp_access_token: the Graph API token replies are sent with.
        whatsapp_api_url: the Graph API base URL with its version.
        whatsapp_tenants: ``phone_number_id:tenant`` pairs; unlisted numbers go to ``default``.
        twilio_account_sid: the Twilio account (``AC…``) replies are sent from.
        twilio_auth_token: the Twilio auth token (``X-Twilio-Signature``, REST API); empty:
            Twilio is off (404).
        twilio_api_url: the Twilio REST API base URL.
        twilio_tenants: ``+number:tenant`` pairs; unlisted numbers go to ``default``.
        public_url: the base URL the providers call (as configured at Meta and Twilio), used
            to check Twilio signatures behind a proxy; empty: the request's own URL.
        stale_after: seconds after which an inbound message is stored but not answered.
        channel_worker: whether each service worker runs the channel processor
            (``threadkeep serve --no-worker`` turns it off).
        channel_lease: seconds a channel turn's lease lasts if its processor dies.
        encryption_keys: keys to encrypt message content, payloads, states and facts at rest
            with, ``"k2:<base64>,k1:<base64>"``, the current key first (see docs/security.md);
            empty: no encryption.
    """

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    store: str = DEFAULT_STORE_URL
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    bot: str = Field(default="seller", min_length=1)
    api_keys: str = ""
    api_keys_file: Path | None = None
    rate_limit: int = Field(default=6000, ge=0)
    visitor_rate_limit: int = Field(default=120, ge=0)
    rate_window: float = Field(default=60.0, gt=0)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    request_timeout: float = Field(default=30.0, gt=0)
    keep_alive: int = Field(default=5, ge=1)
    worker_healthcheck: int = Field(default=30, ge=1)
    turn_lease: float = Field(default=30.0, gt=0)
    turn_wait: float = Field(default=5.0, ge=0)
    sse_heartbeat: float = Field(default=15.0, gt=0)
    ready_timeout: float = Field(default=2.0, gt=0)
    events_kept: int = Field(default=DEFAULT_LIMITS.events_kept, ge=1)
    log_level: str = "INFO"
    cors_origins: str = ""
    ttl: float | None = Field(default=_DEFAULT_TTL, gt=0)
    idle_after: float = Field(default=DEFAULT_RETENTION.idle_after.total_seconds(), gt=0)
    window: int = Field(default=DEFAULT_RETENTION.window, ge=1, le=1000)
    public_chat: bool = False
    public_tenant: str = Field(default="default", min_length=1, max_length=256)
    visitor_secret: str = Field(default="", repr=False)
    visitor_token_ttl: float = Field(default=30 * 24 * 3600.0, gt=0)
    playbook: str = "seller"
    playbooks: str = ""
    ghl_locations: str = ""
    ghl_public_key: str = ""
    ghl_rsa_public_key: str = ""
    ghl_max_age: float = Field(default=300.0, gt=0)
    ghl_token: str = Field(default="", repr=False)
    ghl_client_id: str = ""
    ghl_client_secret: str = Field(default="", repr=False)
    ghl_refresh_token: str = Field(default="", repr=False)
    ghl_api_url: str = "https://services.leadconnectorhq.com"
    ghl_version: str = "2021-07-28"
    ghl_map: Path | None = None
    ghl_rate_limit: int = Field(default=100, ge=1)
    ghl_rate_window: float = Field(default=10.0, gt=0)
    ghl_retry: float = Field(default=5.0, gt=0)
    ghl_sync_tenant: str = "ghl-sync"
    whatsapp_verify_token: str = Field(default="", repr=False)
    whatsapp_app_secret: str = Field(default="", repr=False)
    whatsapp_access_token: str = Field(default="", repr=False)
    whatsapp_api_url: str = "https://graph.facebook.com/v25.0"
    whatsapp_tenants: str = ""
    twilio_account_sid: str = ""
    twilio_auth_token: str = Field(default="", repr=False)
    twilio_api_url: str = "https://api.twilio.com"
    twilio_tenants: str = ""
    public_url: str = ""
    stale_after: float = Field(default=86400.0, gt=0)
    channel_worker: bool = True
    channel_lease: float = Field(default=30.0, gt=0)
    encryption_keys: str = Field(default="", repr=False)

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl_none(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("none", "never", ""):
            return None
        return value

    def encryption(self) -> Encryption | None:
        """Return the encryption keys these settings give (None: no encryption).

        Raises:
            InvalidInput: malformed keys (see ``Encryption.from_env``).
        """
        return Encryption.from_env(self.encryption_keys) if self.encryption_keys else None

    def limits(self) -> Limits:
        """Return the store limits these settings ask for."""
        return replace(DEFAULT_LIMITS, events_kept=self.events_kept)

    def retention(self) -> Retention:
        """Return the retention of new conversations these settings ask for."""
        return Retention(
            ttl=None if self.ttl is None else timedelta(seconds=self.ttl),
            idle_after=timedelta(seconds=self.idle_after),
            window=self.window,
        )

    def visitor_secrets(self) -> list[str]:
        """Return the visitor token secrets, newest first (none when public chat is off).

        Raises:
            InvalidInput: public chat is on without a secret, or a secret is too short.
        """
        if not self.public_chat:
            return []
        secrets = [s.strip() for s in self.visitor_secret.split(",") if s.strip()]
        name = "THREADKEEP_VISITOR_SECRET"
        if not secrets:
            raise InvalidInput(
                f"THREADKEEP_PUBLIC_CHAT=true needs {name}: a random string of "
                f"{MIN_SECRET}+ characters (python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'), the same for every worker",
                field=name,
            )
        if any(len(s) < MIN_SECRET for s in secrets):
            raise InvalidInput(
                f"{name} must be at least {MIN_SECRET} characters (each, when several)",
                field=name,
            )
        return secrets

    def tenants_by_key(self) -> dict[str, str]:
        """Return the configured API keys, each mapped to its tenant.

        Raises:
            InvalidInput: a malformed pair, an unreadable or malformed keys file, a bad tenant
                name, or one key given for two tenants.
        """
        keys: dict[str, str] = {}

        def add(key: str, tenant: str, where: str) -> None:
            if not tenant or len(tenant) > 256 or not tenant.isprintable():
                raise InvalidInput(f"a tenant name in {where} is empty or unprintable", field=where)
            if not key or any(c.isspace() for c in key):
                raise InvalidInput(f"an API key in {where} is empty or has spaces", field=where)
            if key.startswith(HASHED) and not _HASH.fullmatch(key.removeprefix(HASHED)):
                raise InvalidInput(
                    f"a hashed API key in {where} must be sha256: and 64 lowercase hex digits",
                    field=where,
                )
            if keys.get(key, tenant) != tenant:
                raise InvalidInput(f"one API key in {where} is given for two tenants", field=where)
            keys[key] = tenant

        for pair in self.api_keys.replace(",", " ").split():
            tenant, sep, key = pair.partition(":")
            if not sep:
                raise InvalidInput(
                    "THREADKEEP_API_KEYS takes tenant:key pairs separated by commas",
                    field="THREADKEEP_API_KEYS",
                )
            add(key, tenant, "THREADKEEP_API_KEYS")
        if self.api_keys_file is not None:
            where = str(self.api_keys_file)
            try:
                data = json.loads(self.api_keys_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                message = f"cannot read API keys file {where}: {exc}"
                raise InvalidInput(message, field=where) from exc
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise InvalidInput(
                    f'API keys file {where} must hold a JSON object {{"key": "tenant"}}',
                    field=where,
                )
            for key, tenant in data.items():
                add(key, tenant, where)
        return keys


def hash_key(key: str) -> str:
    """Return how an API key may be configured without the key itself: ``sha256:<hex>``."""
    return HASHED + hashlib.sha256(key.encode()).hexdigest()


def load_settings(environ: Mapping[str, str] | None = None) -> ServiceSettings:
    """Read the settings from ``THREADKEEP_*`` variables (default: the environment).

    Raises:
        InvalidInput: a bad value; the message is one line naming the variable and the rule.
    """
    source = os.environ if environ is None else environ
    values = {
        name: source[PREFIX + name.upper()]
        for name in ServiceSettings.model_fields
        if PREFIX + name.upper() in source
    }
    try:
        # Values given by name, read as the environment would be (strings, parsed by field).
        return ServiceSettings.model_validate(values) if environ is not None else ServiceSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = PREFIX + str(first["loc"][0]).upper() if first["loc"] else PREFIX
        shown = values.get(str(first["loc"][0])) if first["loc"] else None
        raise InvalidInput(f"{name}={shown!r} is not valid: {first['msg']}", field=name) from None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Return the ``THREADKEEP_*`` variables that name no setting (most likely typos)."""
    source = os.environ if environ is None else environ
    known = {PREFIX + name.upper() for name in ServiceSettings.model_fields} | _OTHER_VARIABLES
    return sorted(k for k in source if k.startswith(PREFIX) and k not in known)


@lru_cache
def get_settings() -> ServiceSettings:
    """Return the settings read from the environment (read once per process).

    Raises:
        InvalidInput: a bad value (one line naming the variable and the rule).
    """
    return load_settings()


def is_loopback(host: str | None) -> bool:
    """Return whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
