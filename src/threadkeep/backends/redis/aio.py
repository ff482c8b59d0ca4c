"""Asynchronous Redis backend (redis.asyncio); durability and atomicity: see the package."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, NamedTuple, TypeVar

import redis
import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from threadkeep._rules.ops import Op, Result
from threadkeep._url import StoreURL
from threadkeep.backends._loops import PerLoop
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
from threadkeep.backends.redis._pool import AsyncPool

__all__ = ["AsyncRedisBackend"]

T = TypeVar("T")
R = TypeVar("R")


class _Clients(NamedTuple):
    """One event loop's clients (see RedisBase), scripts and cluster-check lock."""

    client: Any
    blocking: Any
    scripts: dict[str, Any]
    cluster: bool
    lock: asyncio.Lock
    #: one turn per connection of the blocking pool (see RedisBackend._turns)
    turns: asyncio.Semaphore
    #: a Cluster node's own client, for WAIT (see RedisBackend._replicated)
    nodes: dict[str, aioredis.Redis]


class AsyncRedisBackend(RedisBase):
    """Redis backend over asyncio connection pools, one per event loop; see RedisBase.

    redis.asyncio connections belong to the loop that opened them, so each loop that uses the
    store gets clients of its own, closed before that loop ends (``_loops.PerLoop``).
    """

    def __init__(self, url: StoreURL) -> None:
        super().__init__(url)
        self._cluster_mode = False
        self._probed = False
        self._loops: PerLoop[_Clients] = PerLoop(self._connect, _aclose_clients)
        self._probe()

    def _probe(self) -> None:
        """PING once with a blocking client, so opening an unreachable store fails at once.

        The registry builds async backends in a worker thread, outside any event loop; the
        loops' own clients are made later, on first use in each loop.

        Raises:
            BackendUnavailable: the server cannot be reached (or refuses our password).
        """
        pool = redis.BlockingConnectionPool.from_url(
            self._options.server_url, **self._options.client_kwargs()
        )
        client = redis.Redis(connection_pool=pool, retry=redis.retry.Retry(NoBackoff(), 0))
        call = self._call()
        try:
            call.retry().call_with_retry(client.ping, call.failed)
        except redis.RedisError as exc:
            call.fail(exc)
        finally:
            pool.disconnect()
            client.close()

    def _standalone(self, url: str | None = None) -> aioredis.Redis:
        pool = AsyncPool.from_url(
            url or self._options.server_url,
            retry=Retry(NoBackoff(), 0),
            **self._options.client_kwargs(),
        )
        return aioredis.Redis(connection_pool=pool)

    async def _replicated(self, clients: _Clients, request: Eval | Command) -> Any:
        """See RedisBackend._replicated."""
        client = clients.client
        if clients.cluster:
            node = client.get_node_from_key(self._routing_key(request))
            if node.name not in clients.nodes:
                url = self._options.node_url(node.host, node.port)
                clients.nodes[node.name] = self._standalone(url)
            client = clients.nodes[node.name]
        pipe = client.pipeline(transaction=False)
        if isinstance(request, Eval):
            script = clients.scripts[request.name]
            await script(keys=[request.route], args=list(request.args), client=pipe)
        else:
            pipe.execute_command(*request.args)
        pipe.execute_command(*self._options.wait_command())
        try:
            reply, acknowledged = await pipe.execute()
        except (rex.ConnectionError, *FAILOVER_ERRORS) as exc:
            if client is clients.client:
                raise
            with contextlib.suppress(redis.RedisError, rex.RedisClusterException):
                await clients.client.nodes_manager.initialize()  # where is the slot now?
            if isinstance(exc, rex.ConnectionError):
                raise
            raise rex.ConnectionError(f"{node.name} no longer serves the slot: {exc}") from exc
        self._options.check_replicated(int(acknowledged))
        return reply

    async def _cluster(self) -> aioredis.RedisCluster:
        cluster = aioredis.RedisCluster.from_url(
            self._options.server_url, retry=Retry(NoBackoff(), 0), **self._options.cluster_kwargs()
        )
        try:
            await cluster.initialize()
        except rex.RedisClusterException as exc:  # not a RedisError: map it here
            await cluster.aclose()
            raise rex.ConnectionError(f"cluster discovery failed: {exc}") from exc
        return cluster

    async def _connect(self) -> _Clients:
        """This loop's clients: of the cluster once one was found, else of the server."""
        if not self._cluster_mode:
            server = self._standalone()
            return _Clients(server, self._standalone(), self._register(server), False,
                            asyncio.Lock(), self._turns(), {})  # fmt: skip
        cluster = await self._cluster()
        try:
            blocking = await self._cluster()
        except rex.ConnectionError:
            await _aclose(cluster)
            raise
        return _Clients(
            cluster, blocking, self._register(cluster), True, asyncio.Lock(), self._turns(), {}
        )

    def _turns(self) -> asyncio.Semaphore:
        return asyncio.Semaphore(self._options.pool_size)

    async def _clients(self) -> _Clients:
        """This loop's clients; on first use, switch to cluster clients on a cluster node.

        On first use it also reads (or records) the store's layout (``Flows.layout``).
        """
        clients = await self._loops.get()
        if self._checked and clients.cluster == self._cluster_mode:
            return clients
        async with clients.lock:
            current = self._loops.current()
            if current is not clients:  # another task of this loop switched them
                return await self._clients()
            if not self._probed:  # asked once (a failed layout read does not ask again)
                check_server(await clients.client.info("server"), self._options.host)
                info = await clients.client.info("cluster")
                self._cluster_mode = bool(info.get("cluster_enabled"))
                self._probed = True
            if clients.cluster != self._cluster_mode:
                switched = await self._connect()
                self._loops.replace(switched)
                await _aclose_clients(clients)
                clients = switched
            if not self._checked:
                layout = self._flows.layout(self._options.shard, self._cluster_mode)
                try:
                    command = next(layout)
                    while True:
                        command = layout.send(await self._command(clients, command))
                except StopIteration:
                    pass
                self._checked = True
        return clients

    async def _command(self, clients: _Clients, request: Command) -> Any:
        if self._replicates(request):
            return await self._replicated(clients, request)
        return await clients.client.execute_command(*request.args)

    async def _request(self, request: Request) -> Any:
        clients = await self._clients()
        if isinstance(request, Eval):
            if self._options.replicas and self._replicates(request):
                return await self._replicated(clients, request)
            script = clients.scripts[request.name]
            if clients.cluster:
                return await script(keys=[request.route], args=list(request.args))
            return await self._evalsha(clients.client, script, request)
        if isinstance(request, Command):
            return await self._command(clients, request)
        if isinstance(request, Transaction):  # never on a Cluster (Flows.cluster)
            return exec_reply(await self._exchange(clients.client, *transaction(request)))
        if isinstance(request, Pause):
            await asyncio.sleep(request.seconds)
            return None
        try:
            async with asyncio.timeout(request.seconds):
                await clients.turns.acquire()
        except TimeoutError:
            return None  # every blocking connection is busy for all of this wait
        try:
            ms = self._options.block_ms(request.seconds)
            return await clients.blocking.xread(
                {request.stream: request.after_id}, count=1, block=ms
            )
        finally:
            clients.turns.release()

    async def _evalsha(self, client: aioredis.Redis, script: Any, request: Eval) -> Any:
        """See RedisBackend._evalsha."""
        command = ("EVALSHA", script.sha, 1, request.route, *request.args)
        try:
            return await self._exchange(client, command)
        except rex.NoScriptError:
            return await self._exchange(client, ("SCRIPT", "LOAD", script.script), command)

    @staticmethod
    async def _exchange(client: aioredis.Redis, *commands: tuple[str | int, ...]) -> Any:
        """See RedisBackend._exchange (a connection cancelled mid-read closes itself)."""
        pool: Any = client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed(conn, commands))
            if len(commands) == 1:
                return await conn.read_response()
            try:
                replies = [await conn.read_response() for _ in commands]
            except BaseException:
                await conn.disconnect()
                raise
            return replies[-1]
        finally:
            await pool.release(conn)

    async def _send(self, request: Request) -> Any:
        """See RedisBackend._send."""
        started = time.monotonic()
        try:
            return await self._request(request)
        except RETRYABLE as exc:
            return await self._resend(request, exc, self._call(started))
        except redis.RedisError as exc:
            self._call(started).fail(exc)

    async def _resend(self, request: Request, exc: Exception, call: Attempts) -> Any:
        """See RedisBackend._resend."""
        if isinstance(request, Eval):
            request = request.resent()
        try:
            while True:
                pause = call.after(exc)
                if pause > 0:
                    await asyncio.sleep(pause)
                try:
                    return await self._request(request)
                except RETRYABLE as again:
                    exc = again
        except redis.RedisError as final:
            call.fail(final)

    async def _drive(self, flow: Flow[T]) -> T:
        if not self._checked:  # the flow reads the layout when it starts: know it first
            await self._send(READY)
        try:
            request = next(flow)
            while True:
                request = flow.send(await self._send(request))
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def execute(self, op: Op[R]) -> Result[R]:
        """See RedisBackend.execute."""
        return await self._drive(self._flows.flow(op))

    async def ping(self) -> None:
        """See AsyncBackend.ping."""
        await self._drive(self._flows.ping())

    async def close(self) -> None:
        """See AsyncBackend.close: every loop's clients."""
        await self._loops.aclose()


async def _aclose_clients(clients: _Clients) -> None:
    await _aclose(clients.client)
    await _aclose(clients.blocking)
    for node in clients.nodes.values():
        await _aclose(node)


async def _aclose(client: aioredis.Redis | aioredis.RedisCluster) -> None:
    """Close a client and disconnect its pool (a cluster client closes its nodes itself)."""
    await client.aclose()
    if isinstance(client, aioredis.Redis):
        await client.connection_pool.disconnect()
