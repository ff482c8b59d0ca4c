"""Synchronous Redis backend; durability and atomicity: see the package docstring."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Generator
from typing import Any, TypeVar

import redis
from redis import exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from threadkeep._rules import ops
from threadkeep._url import StoreURL
from threadkeep.backends.redis._errors import Policy
from threadkeep.backends.redis._flows import Command, Eval, Flows, Request
from threadkeep.backends.redis._options import Options, check_server
from threadkeep.backends.redis._scripts import SCRIPTS

__all__ = ["RedisBackend"]

T = TypeVar("T")


class RedisBackend:
    """Redis backend over a blocking connection pool (thread-safe).

    On first use it asks the server whether it is a Redis Cluster node; if so it talks through
    redis-py's ``RedisCluster`` instead (every key of the store is in one slot, see ``_keys``).

    Args:
        url: a ``redis://`` or ``rediss://`` store URL.
    """

    def __init__(self, url: StoreURL) -> None:
        self._options = Options.from_url(url)
        self._flows = Flows(self._options.keys, self._options.idempotency_keys)
        self._policy = Policy(self._options.host, self._options.retries, self._options.timeout)
        self._client: Any = self._standalone()
        # event followers wait in XREAD BLOCK on their own pool, so however many there are,
        # they never hold the connections appends and reads need
        self._blocking: Any = self._standalone()
        self._scripts = {name: self._client.register_script(text) for name, text in SCRIPTS.items()}
        self._lock = threading.Lock()
        self._checked = False

    def _standalone(self) -> redis.Redis:
        pool = redis.BlockingConnectionPool.from_url(
            self._options.server_url, retry=Retry(NoBackoff(), 0), **self._options.client_kwargs()
        )
        return redis.Redis(connection_pool=pool)

    def _cluster(self) -> redis.RedisCluster:
        try:
            return redis.RedisCluster.from_url(
                self._options.server_url,
                retry=Retry(NoBackoff(), 0),
                connection_pool_class=redis.BlockingConnectionPool,
                timeout=self._options.timeout,  # wait this long for a free connection
                **self._options.cluster_kwargs(),
            )
        except rex.RedisClusterException as exc:  # not a RedisError: map it here
            raise rex.ConnectionError(f"cluster discovery failed: {exc}") from exc

    def _check_cluster(self) -> None:
        """On first use, switch to cluster clients if the server is a Redis Cluster node."""
        with self._lock:
            if self._checked:
                return
            check_server(self._client.info("server"), self._options.host)
            if self._client.info("cluster").get("cluster_enabled"):
                cluster = self._cluster()
                try:
                    blocking = self._cluster()
                except rex.ConnectionError:
                    _close(cluster)
                    raise
                for standalone in (self._client, self._blocking):
                    _close(standalone)
                self._client, self._blocking = cluster, blocking
                self._scripts = {
                    name: cluster.register_script(text) for name, text in SCRIPTS.items()
                }
            self._checked = True

    def _execute(self, request: Request) -> Any:
        if not self._checked:
            self._check_cluster()
        if isinstance(request, Eval):
            script = self._scripts[request.name]
            return script(keys=[self._options.keys.events], args=list(request.args))
        if isinstance(request, Command):
            return self._client.execute_command(*request.args)
        events = self._options.keys.events
        ms = self._options.block_ms(request.seconds)
        return self._blocking.xread({events: request.after_id}, count=1, block=ms)

    def _send(self, request: Request) -> Any:
        call = self._policy.call()
        try:
            return call.retry().call_with_retry(lambda: self._execute(request), call.failed)
        except redis.RedisError as exc:
            call.fail(exc)

    def _drive(self, flow: Generator[Request, Any, T]) -> T:
        try:
            request = next(flow)
            while True:
                request = flow.send(self._send(request))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def ping(self) -> None:
        """See Backend.ping."""
        self._drive(self._flows.ping())

    def close(self) -> None:
        """See Backend.close."""
        _close(self._client)
        _close(self._blocking)

    def create(self, op: ops.StartOp) -> tuple[ops.Outcome, ops.ConvRow]:
        """See Backend.create."""
        return self._drive(self._flows.create(op))

    def get(self, op: ops.GetOp) -> ops.ConvRow | None:
        """See Backend.get."""
        return self._drive(self._flows.get(op))

    def find_open(self, op: ops.FindOpenOp) -> ops.ConvRow | None:
        """See Backend.find_open."""
        return self._drive(self._flows.find_open(op))

    def append(self, op: ops.AppendOp) -> ops.AppendResult:
        """See Backend.append."""
        return self._drive(self._flows.append(op))

    def read_messages(self, op: ops.ReadOp) -> builtins.list[ops.MsgRow] | None:
        """See Backend.read_messages."""
        return self._drive(self._flows.read_messages(op))

    def read_context(self, op: ops.ReadOp) -> builtins.list[tuple[str, str]] | None:
        """See Backend.read_context."""
        return self._drive(self._flows.read_context(op))

    def update(self, op: ops.UpdateOp) -> ops.UpdateResult:
        """See Backend.update."""
        return self._drive(self._flows.update(op))

    def save_state(self, op: ops.SaveStateOp) -> ops.StateResult:
        """See Backend.save_state."""
        return self._drive(self._flows.save_state(op))

    def load_state(self, op: ops.LoadStateOp) -> tuple[ops.Outcome, ops.StateRow | None]:
        """See Backend.load_state."""
        return self._drive(self._flows.load_state(op))

    def list(self, op: ops.ListOp) -> builtins.list[ops.ConvRow]:
        """See Backend.list."""
        return self._drive(self._flows.list(op))

    def counts(self, op: ops.CountsOp) -> ops.CountsRow:
        """See Backend.counts."""
        return self._drive(self._flows.counts(op))

    def delete(self, op: ops.DeleteOp) -> bool:
        """See Backend.delete."""
        return self._drive(self._flows.delete(op))

    def delete_contact(self, op: ops.DeleteContactOp) -> int:
        """See Backend.delete_contact."""
        return self._drive(self._flows.delete_contact(op))

    def sweep(self, op: ops.SweepOp) -> ops.SweepRow:
        """See Backend.sweep."""
        return self._drive(self._flows.sweep(op))

    def read_events(self, op: ops.EventsOp, wait: float) -> builtins.list[ops.EventRow] | None:
        """See Backend.read_events."""
        return self._drive(self._flows.read_events(op, wait))

    def acquire_lease(self, op: ops.LeaseOp) -> ops.LeaseResult:
        """See Backend.acquire_lease."""
        return self._drive(self._flows.acquire_lease(op))

    def release_lease(self, op: ops.ReleaseOp) -> None:
        """See Backend.release_lease."""
        self._drive(self._flows.release_lease(op))

    def remember(self, op: ops.RememberOp) -> ops.FactRow:
        """See Backend.remember."""
        return self._drive(self._flows.remember(op))

    def recall(self, op: ops.RecallOp) -> builtins.list[ops.FactRow]:
        """See Backend.recall."""
        return self._drive(self._flows.recall(op))


def _close(client: redis.Redis | redis.RedisCluster) -> None:
    """Close a client and disconnect its pools (every node's, for a cluster client)."""
    if isinstance(client, redis.RedisCluster):
        # RedisCluster.close() leaves the nodes' pools connected (it closes clients built on
        # explicit pools): disconnect them, or their sockets leak
        for node in client.get_nodes():  # type: ignore[no-untyped-call]
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
    else:
        client.connection_pool.disconnect()
    client.close()
