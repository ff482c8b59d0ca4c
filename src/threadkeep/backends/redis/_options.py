"""Connection options of a Redis store URL, shared by both drivers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from redis import exceptions as rex

from threadkeep._url import StoreURL
from threadkeep.backends.redis._keys import Keys

__all__ = ["ConnectionOptions", "NotReplicated", "check_server"]


class NotReplicated(rex.TimeoutError):
    """Fewer replicas than asked acknowledged a change in time (``WAIT``)."""


DEFAULT_PREFIX = "threadkeep"
DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
DEFAULT_POOL = 50
DEFAULT_IDEMPOTENCY_KEYS = 10_000
DEFAULT_REPLICAS_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """What a driver needs from the store URL.

    Attributes:
        server_url: the URL redis-py understands (our query parameters removed).
        host: host:port for messages, without any password.
        keys: the store's key names (``?prefix=``).
        timeout: socket and per-call deadline in seconds (``?timeout=``).
        retries: resends after a connection error (``?retries=``).
        pool_size: most connections held (``?pool_size=``).
        idempotency_keys: caller idempotency keys remembered per conversation.
        shard: the layout asked for (``?shard=``: ``"none"`` or ``"tenant"``), None: the one
            the store recorded, or for a new store ``"tenant"`` on a Redis Cluster, else
            ``"none"`` (``_shards``).
        replicas: how many replicas must acknowledge a change before it returns (``WAIT``).
        replicas_timeout: seconds a change waits for them.
    """

    server_url: str
    host: str
    keys: Keys
    timeout: float
    retries: int
    pool_size: int
    idempotency_keys: int
    shard: str | None
    replicas: int
    replicas_timeout: float

    @classmethod
    def from_url(cls, url: StoreURL) -> ConnectionOptions:
        """Read the options of ``url``, with defaults."""
        parts = urlsplit(url.raw)
        o = url.options
        return cls(
            server_url=parts._replace(query="", fragment="").geturl(),
            host=url.host or "localhost:6379",
            keys=Keys(o.get("prefix", DEFAULT_PREFIX)),
            timeout=o.get("timeout", DEFAULT_TIMEOUT),
            retries=o.get("retries", DEFAULT_RETRIES),
            pool_size=o.get("pool_size") or DEFAULT_POOL,
            idempotency_keys=max(1, o.get("idempotency_keys", DEFAULT_IDEMPOTENCY_KEYS)),
            shard=o.get("shard"),
            replicas=o.get("replicas", 0),
            replicas_timeout=o.get("replicas_timeout", DEFAULT_REPLICAS_TIMEOUT),
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the connection pool (redis-py's own retries switched off)."""
        return {
            "decode_responses": True,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "max_connections": self.pool_size,
            "timeout": self.timeout,
            "health_check_interval": 0,
        }

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a cluster client (its own retries switched off, ours apply)."""
        return {
            "decode_responses": True,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "max_connections": self.pool_size,
            "health_check_interval": 0,
        }

    def wait_command(self) -> tuple[str, int, int]:
        """The ``WAIT`` sent after each change when ``replicas`` is set.

        It ends before the socket timeout (as ``block_ms``), or the wait would look like a
        dead server.
        """
        seconds = min(self.replicas_timeout, self.timeout * 0.8)
        return ("WAIT", self.replicas, max(1, int(seconds * 1000)))

    def node_url(self, host: str, port: int) -> str:
        """The server URL with another node's address (a Cluster node's, for ``WAIT``)."""
        parts = urlsplit(self.server_url)
        credentials = parts.netloc.rpartition("@")[0]
        address = f"{host}:{port}"
        return parts._replace(
            netloc=f"{credentials}@{address}" if credentials else address
        ).geturl()

    def check_replicated(self, acknowledged: int) -> None:
        """Refuse a change fewer replicas than ``replicas`` acknowledged within the timeout.

        Raises:
            NotReplicated: retried (the scripts answer a resent change as they did), then
                BackendUnavailable.
        """
        if acknowledged < self.replicas:
            raise NotReplicated(
                f"only {acknowledged} of {self.replicas} replicas acknowledged the change "
                f"within {self.wait_command()[2] / 1000:g} s (?replicas=, ?replicas_timeout=)"
            )

    def block_ms(self, seconds: float) -> int:
        """Return an XREAD BLOCK time that ends before the socket timeout (never 0: forever)."""
        return max(1, int(min(seconds, self.timeout * 0.8) * 1000))


def check_server(server_info: dict[str, Any], host: str) -> None:
    """Refuse a server older than Redis 7.0 (``INFO server``), which cannot run the scripts.

    Raises:
        redis.exceptions.ResponseError: mapped to BackendError, which retrying does not fix.
    """
    version = str(server_info.get("redis_version", "0"))
    try:
        major = int(version.split(".", 1)[0])
    except ValueError:
        major = 0
    if major < 7:
        raise rex.ResponseError(
            f"threadkeep needs Redis 7.0 or newer (its scripts use #!lua flags and "
            f"PEXPIRETIME); {host} runs Redis {version}"
        )
