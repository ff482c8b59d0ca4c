"""Store URLs: one string picks the backend and its options."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from threadkeep._exceptions import InvalidInput

__all__ = ["QUERY_PARSERS", "SCHEME_ALIASES", "StoreURL"]


def _positive_float(text: Any) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _non_negative_int(text: Any) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be zero or more")
    return value


def _cache_size(text: Any) -> int:
    value = int(text)
    if value == 0 or not -(2**31) <= value < 2**31:
        raise ValueError(
            "must be pages (positive) or KiB (negative), as SQLite's PRAGMA cache_size: "
            "not 0, and within a 32-bit integer (SQLite ignores a larger one)"
        )
    return value


def _partitions(text: Any) -> int:
    value = int(text)
    if not 0 <= value <= 1024:
        raise ValueError("must be 0 (unpartitioned) to 1024")
    return value


def _name(text: Any) -> str:
    value = str(text)
    if not value or not value.replace("_", "").replace("-", "").isalnum():
        raise ValueError("must be letters, digits, '_' or '-'")
    return value


def _shard(text: Any) -> str:
    value = str(text)
    if value not in ("none", "tenant"):
        raise ValueError("must be 'none' (one slot per store) or 'tenant' (spread by tenant)")
    return value


_REDIS: Final[dict[str, Callable[[Any], Any]]] = {
    "prefix": _name,
    "idempotency_keys": _non_negative_int,
    "shard": _shard,
    "replicas": _non_negative_int,
    "replicas_timeout": _positive_float,
}

_NETWORK: Final[dict[str, Callable[[Any], Any]]] = {
    "timeout": _positive_float,
    "retries": _non_negative_int,
    "pool_size": _non_negative_int,
}

#: Per scheme: the query parameters (and keyword options) it takes, with their parsers.
QUERY_PARSERS: Final[Mapping[str, Mapping[str, Callable[[Any], Any]]]] = MappingProxyType(
    {
        "memory": {},
        "sqlite": {"timeout": _positive_float, "cache_size": _cache_size},
        "redis": {**_NETWORK, **_REDIS},
        "rediss": {**_NETWORK, **_REDIS},
        "postgresql": {**_NETWORK, "schema": _name, "partitions": _partitions},
    }
)

SCHEME_ALIASES: Final = MappingProxyType({"postgres": "postgresql"})


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL.

    Attributes:
        scheme: the backend's scheme (aliases resolved).
        raw: the URL as given (may hold a password; never printed).
        host: host[:port] for network stores, else "".
        path: the path part (the SQLite file, the Redis db, the PostgreSQL database).
        options: typed query parameters merged with keyword options.
    """

    scheme: str
    raw: str
    host: str
    path: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str, **overrides: Any) -> StoreURL:
        """Parse ``url``; keyword ``overrides`` replace query parameters.

        Raises:
            InvalidInput: for an unknown scheme, or an unknown or malformed option.
        """
        if not isinstance(url, str) or "://" not in url:
            raise InvalidInput(
                f"store URL {url!r} is malformed; expected e.g. memory://, "
                "sqlite:///threadkeep.db, redis://127.0.0.1:6379/0, postgresql://host/db",
                field="url",
            )
        parts = urlsplit(url)
        scheme = SCHEME_ALIASES.get(parts.scheme, parts.scheme)
        if scheme not in QUERY_PARSERS:
            known = ", ".join(sorted({*QUERY_PARSERS, *SCHEME_ALIASES}))
            raise InvalidInput(
                f"unknown store scheme {parts.scheme!r}; known: {known}", field="url"
            )
        parsers = QUERY_PARSERS[scheme]
        given: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
        given.update(overrides)
        options: dict[str, Any] = {}
        for key, value in given.items():
            if key not in parsers:
                allowed = ", ".join(sorted(parsers)) or "none"
                raise InvalidInput(
                    f"unknown option {key!r} for {scheme}:// stores; allowed: {allowed}",
                    field=key,
                )
            try:
                options[key] = parsers[key](value)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"option {key}={value!r} is malformed: {exc}", field=key
                ) from None
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return cls(scheme=scheme, raw=url, host=host, path=unquote(parts.path), options=options)

    def __repr__(self) -> str:
        return f"StoreURL({self.redacted()!r})"

    def redacted(self) -> str:
        """Return the URL with any password replaced by ``***``."""
        parts = urlsplit(self.raw)
        if parts.password is None:
            return self.raw
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
