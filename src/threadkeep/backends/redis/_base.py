"""What the sync and the async Redis drivers share, apart from talking to the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from redis import exceptions as rex

from threadkeep._url import StoreURL
from threadkeep.backends.redis._errors import Attempts
from threadkeep.backends.redis._flows import Command, Eval, Flows, Transaction
from threadkeep.backends.redis._options import ConnectionOptions
from threadkeep.backends.redis._scripts import READ_ONLY, SCRIPTS

__all__ = ["FAILOVER_ERRORS", "RedisBase", "exec_reply", "packed", "transaction"]

_Pack = Callable[[tuple[str | int, ...]], bytes]
try:  # hiredis packs a whole command in C (redis-py's packer loops over the arguments first)
    import hiredis

    _pack: _Pack | None = cast(_Pack, hiredis.pack_command)
except ImportError:  # pragma: no cover - the redis extra installs hiredis
    _pack = None

#: The plain commands the flows send that write (the layout, a sharded store's tags, aliases).
_WRITES = frozenset({"SET", "SADD", "HSET", "HSETNX"})

#: Replies of a Cluster node that no longer serves a slot (a failover moved it): the slot map
#: is read again and the request resent.
FAILOVER_ERRORS = (
    rex.MovedError,
    rex.AskError,
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.ReadOnlyError,
)


class RedisBase:
    """A Redis driver's options, flows and clients.

    On first use a driver asks the server whether it is a Redis Cluster node; if so it talks
    through redis-py's ``RedisCluster`` instead (every key a script touches is in one slot, see
    ``_keys``). Event followers wait in XREAD BLOCK on a client of their own (``_blocking``),
    so however many there are, they never hold the connections appends and reads need.

    Args:
        url: a ``redis://`` or ``rediss://`` store URL.
    """

    def __init__(self, url: StoreURL) -> None:
        self._options = ConnectionOptions.from_url(url)
        self._flows = Flows(self._options.keys, self._options.idempotency_keys)
        self._checked = False

    @staticmethod
    def _register(client: Any) -> dict[str, Any]:
        return {name: client.register_script(text) for name, text in SCRIPTS.items()}

    def _replicates(self, request: Eval | Command) -> bool:
        """Whether ``request`` is a change to be followed by ``WAIT`` (``?replicas=``)."""
        if not self._options.replicas:
            return False
        if isinstance(request, Eval):
            return request.name not in READ_ONLY
        return str(request.args[0]) in _WRITES

    @staticmethod
    def _routing_key(request: Eval | Command) -> str:
        """The key whose slot's node runs ``request``."""
        return request.route if isinstance(request, Eval) else str(request.args[1])

    def _call(self, started: float | None = None) -> Attempts:
        """Return the attempts of one request (retries, deadline, error mapping).

        Args:
            started: when its first attempt started (``time.monotonic()``; default: now).
        """
        options = self._options
        return Attempts(options.host, options.retries, options.timeout, started)


def packed(conn: Any, commands: tuple[tuple[str | int, ...], ...]) -> list[bytes]:
    """``commands`` packed for one write on ``conn`` (a redis-py connection, sync or async)."""
    if _pack is None:  # redis-py without hiredis: its own (Python) packer
        return cast(list[bytes], conn.pack_commands(commands))
    try:
        if len(commands) == 1:  # (a script's EVALSHA: no list to join)
            return [_pack(commands[0])]
        return [b"".join([_pack(command) for command in commands])]
    except TypeError as exc:  # as redis-py's packer answers it: a RedisError (BackendError)
        raise rex.DataError(str(exc)) from exc


def transaction(request: Transaction) -> tuple[tuple[str | int, ...], ...]:
    """The commands of ``request`` between ``MULTI`` and ``EXEC``."""
    return (("MULTI",), *request.commands, ("EXEC",))


def exec_reply(replies: list[Any]) -> list[Any]:
    """``EXEC``'s reply, or the first error among the replies of its commands, raised."""
    for reply in replies:
        if isinstance(reply, rex.ResponseError):
            raise reply
    return replies
