"""Synchronous Redis backend; durability and atomicity: see the package docstring."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, TypeVar

import redis
from redis import exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from threadkeep._rules.ops import Op, Result
from threadkeep._url import StoreURL
from threadkeep.backends.redis._base import (
    FAILOVER_ERRORS,
    RedisBase,
    exec_reply,
    packed,
    transaction,
)
from threadkeep.backends.redis._errors import RETRYABLE, Attempts
from threadkeep.backends.redis._flows import (
    READY,
    Command,
    Eval,
    Flow,
    Pause,
    Request,
    Transaction,
)
from threadkeep.backends.redis._options import check_server
from threadkeep.backends.redis._pool import Pool

__all__ = ["RedisBackend"]

T = TypeVar("T")
R = TypeVar("R")


class RedisBackend(RedisBase):
    """Redis backend over a blocking connection pool (thread-safe); see RedisBase."""

    def __init__(self, url: StoreURL) -> None:
        super().__init__(url)
        self._lock = threading.Lock()
        self._client: Any = self._standalone()
        self._blocking: Any = self._standalone()
        # one turn per connection of the blocking pool: a follower that gets none within its
        # wait ends that wait empty (and reads again) instead of failing on an empty pool
        self._turns = threading.BoundedSemaphore(self._options.pool_size)
        self._scripts = self._register(self._client)
        self._nodes: dict[str, redis.Redis] = {}  # a Cluster node's own client, for WAIT
        self._nodes_lock = threading.Lock()
        self._on_cluster: bool | None = None

    def _standalone(self, url: str | None = None) -> redis.Redis:
        pool = Pool.from_url(
            url or self._options.server_url,
            retry=Retry(NoBackoff(), 0),
            **self._options.client_kwargs(),
        )
        return redis.Redis(connection_pool=pool)

    def _replicated(self, request: Eval | Command) -> Any:
        """Run a change, then WAIT on the same connection (of the node that holds its slot).

        redis-py's RedisCluster sends WAIT to every node on connections of their own, where it
        waits for nothing; so on a Cluster the change and its WAIT go in one pipeline to the
        slot's node. A node that lost the slot (failover) makes the slot map be read again.
        """
        client = self._client
        if isinstance(client, redis.RedisCluster):
            key = self._routing_key(request)
            node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
            with self._nodes_lock:
                if node.name not in self._nodes:
                    self._nodes[node.name] = self._standalone(
                        self._options.node_url(node.host, node.port)
                    )
                client = self._nodes[node.name]
        pipe = client.pipeline(transaction=False)
        if isinstance(request, Eval):
            self._scripts[request.name](keys=[request.route], args=list(request.args), client=pipe)
        else:
            pipe.execute_command(*request.args)
        pipe.execute_command(*self._options.wait_command())
        try:
            reply, acknowledged = pipe.execute()
        except (rex.ConnectionError, *FAILOVER_ERRORS) as exc:
            if client is self._client:
                raise
            with contextlib.suppress(redis.RedisError, rex.RedisClusterException):
                self._client.nodes_manager.initialize()  # where is the slot now?
            if isinstance(exc, rex.ConnectionError):
                raise
            raise rex.ConnectionError(f"{node.name} no longer serves the slot: {exc}") from exc
        self._options.check_replicated(int(acknowledged))
        return reply

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
        """On first use, switch to cluster clients on a Redis Cluster node; read the layout."""
        with self._lock:
            if self._checked:
                return
            if self._on_cluster is None:  # asked once (a failed layout read does not ask again)
                self._switch()
            layout = self._flows.layout(self._options.shard, bool(self._on_cluster))
            try:
                command = next(layout)
                while True:
                    command = layout.send(self._command(command))
            except StopIteration:
                pass
            self._checked = True

    def _switch(self) -> None:
        """Check the server; on a Redis Cluster node, talk through cluster clients."""
        check_server(self._client.info("server"), self._options.host)
        on_cluster = bool(self._client.info("cluster").get("cluster_enabled"))
        if on_cluster:
            cluster = self._cluster()
            try:
                blocking = self._cluster()
            except rex.ConnectionError:
                _close(cluster)
                raise
            for standalone in (self._client, self._blocking):
                _close(standalone)
            self._client, self._blocking = cluster, blocking
            self._scripts = self._register(cluster)
        self._on_cluster = on_cluster

    def _command(self, request: Command) -> Any:
        if self._replicates(request):
            return self._replicated(request)
        return self._client.execute_command(*request.args)

    def _request(self, request: Request) -> Any:
        if not self._checked:
            self._check_cluster()
        if isinstance(request, Eval):
            if self._options.replicas and self._replicates(request):
                return self._replicated(request)
            script = self._scripts[request.name]
            if self._on_cluster:
                return script(keys=[request.route], args=list(request.args))
            return self._evalsha(script, request)
        if isinstance(request, Command):
            return self._command(request)
        if isinstance(request, Transaction):  # never on a Cluster (Flows.cluster)
            return exec_reply(self._exchange(*transaction(request)))
        if isinstance(request, Pause):
            time.sleep(request.seconds)
            return None
        if not self._turns.acquire(timeout=request.seconds):
            return None  # every blocking connection is busy for all of this wait
        try:
            ms = self._options.block_ms(request.seconds)
            return self._blocking.xread({request.stream: request.after_id}, count=1, block=ms)
        finally:
            self._turns.release()

    def _evalsha(self, script: Any, request: Eval) -> Any:
        """EVALSHA on a pooled connection; after NOSCRIPT, SCRIPT LOAD and EVALSHA again.

        What redis-py's ``Script`` does, in one round trip after NOSCRIPT (a restart or
        ``SCRIPT FLUSH``) instead of two.
        """
        command = ("EVALSHA", script.sha, 1, request.route, *request.args)
        try:
            return self._exchange(command)
        except rex.NoScriptError:
            return self._exchange(("SCRIPT", "LOAD", script.script), command)

    def _exchange(self, *commands: tuple[str | int, ...]) -> Any:
        """Send ``commands`` in one write on a pooled connection; return the last reply.

        The pool still hands out a connection it checked (no data left unread) and a
        connection still disconnects itself after a socket error or timeout, as under
        ``Redis.execute_command``; skipped are the layers above them (redis-py's metrics
        hooks, its retry closure, ``Script.__call__``, a pipeline object, packing argument by
        argument in a Python loop before hiredis packs the command), about 30 us of client
        CPU per call. A connection with replies left unread (an error after the first of
        several) is closed, never put back dirty.
        """
        pool = self._client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command(packed(conn, commands))
            if len(commands) == 1:
                return conn.read_response()
            try:
                replies = [conn.read_response() for _ in commands]
            except BaseException:
                conn.disconnect()
                raise
            return replies[-1]
        finally:
            pool.release(conn)

    def _send(self, request: Request) -> Any:
        """Send ``request``; resend it after a connection error or timeout (``Attempts``)."""
        started = time.monotonic()
        try:
            return self._request(request)
        except RETRYABLE as exc:
            return self._resend(request, exc, self._call(started))
        except redis.RedisError as exc:
            self._call(started).fail(exc)

    def _resend(self, request: Request, exc: Exception, call: Attempts) -> Any:
        """Send ``request`` again after ``exc``, pausing as ``call`` says, until it answers."""
        if isinstance(request, Eval):
            request = request.resent()
        try:
            while True:
                pause = call.after(exc)
                if pause > 0:
                    time.sleep(pause)
                try:
                    return self._request(request)
                except RETRYABLE as again:
                    exc = again
        except redis.RedisError as final:
            call.fail(final)

    def _drive(self, flow: Flow[T]) -> T:
        if not self._checked:  # the flow reads the layout when it starts: know it first
            self._send(READY)
        try:
            request = next(flow)
            while True:
                request = flow.send(self._send(request))
        except StopIteration as stop:
            result: T = stop.value
            return result

    def execute(self, op: Op[R]) -> Result[R]:
        """Carry out ``op``: one script (sweep: one per batch), resent after a lost reply."""
        return self._drive(self._flows.flow(op))

    def ping(self) -> None:
        """See Backend.ping."""
        self._drive(self._flows.ping())

    def close(self) -> None:
        """See Backend.close."""
        _close(self._client)
        _close(self._blocking)
        for node in self._nodes.values():
            _close(node)


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
