"""Asynchronous Redis backend (redis.asyncio); durability and atomicity: see the package."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Generator
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from threadkeep._rules import ops
from threadkeep._url import StoreURL
from threadkeep.backends.redis._errors import Policy
from threadkeep.backends.redis._flows import Command, Eval, Flows, Request
from threadkeep.backends.redis._options import Options, check_server
from threadkeep.backends.redis._scripts import SCRIPTS

__all__ = ["AsyncRedisBackend"]

T = TypeVar("T")


class AsyncRedisBackend:
    """Redis backend over an asyncio connection pool.

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
        self._checked = False
        self._check_lock: asyncio.Lock | None = None

    def _standalone(self) -> aioredis.Redis:
        pool = aioredis.BlockingConnectionPool.from_url(
            self._options.server_url, retry=Retry(NoBackoff(), 0), **self._options.client_kwargs()
        )
        return aioredis.Redis(connection_pool=pool)

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

    async def _check_cluster(self) -> None:
        """On first use, switch to cluster clients if the server is a Redis Cluster node."""
        if self._check_lock is None:
            self._check_lock = asyncio.Lock()
        async with self._check_lock:
            if not self._checked:
                check_server(await self._client.info("server"), self._options.host)
            if not self._checked and (await self._client.info("cluster")).get("cluster_enabled"):
                cluster = await self._cluster()
                try:
                    blocking = await self._cluster()
                except rex.ConnectionError:
                    await _aclose(cluster)
                    raise
                old = (self._client, self._blocking)
                self._client, self._blocking = cluster, blocking
                self._scripts = {n: cluster.register_script(t) for n, t in SCRIPTS.items()}
                for standalone in old:
                    await _aclose(standalone)
            self._checked = True

    async def _execute(self, request: Request) -> Any:
        if not self._checked:
            await self._check_cluster()
        if isinstance(request, Eval):
            script = self._scripts[request.name]
            return await script(keys=[self._options.keys.events], args=list(request.args))
        if isinstance(request, Command):
            return await self._client.execute_command(*request.args)
        events = self._options.keys.events
        ms = self._options.block_ms(request.seconds)
        return await self._blocking.xread({events: request.after_id}, count=1, block=ms)

    async def _send(self, request: Request) -> Any:
        call = self._policy.call()
        try:
            return await call.aretry().call_with_retry(lambda: self._execute(request), call.afailed)
        except redis.RedisError as exc:
            call.fail(exc)

    async def _drive(self, flow: Generator[Request, Any, T]) -> T:
        try:
            request = next(flow)
            while True:
                request = flow.send(await self._send(request))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def ping(self) -> None:
        """See AsyncBackend.ping."""
        await self._drive(self._flows.ping())

    async def close(self) -> None:
        """See AsyncBackend.close."""
        await _aclose(self._client)
        await _aclose(self._blocking)

    async def create(self, op: ops.StartOp) -> tuple[ops.Outcome, ops.ConvRow]:
        """See AsyncBackend.create."""
        return await self._drive(self._flows.create(op))

    async def get(self, op: ops.GetOp) -> ops.ConvRow | None:
        """See AsyncBackend.get."""
        return await self._drive(self._flows.get(op))

    async def find_open(self, op: ops.FindOpenOp) -> ops.ConvRow | None:
        """See AsyncBackend.find_open."""
        return await self._drive(self._flows.find_open(op))

    async def append(self, op: ops.AppendOp) -> ops.AppendResult:
        """See AsyncBackend.append."""
        return await self._drive(self._flows.append(op))

    async def read_messages(self, op: ops.ReadOp) -> builtins.list[ops.MsgRow] | None:
        """See AsyncBackend.read_messages."""
        return await self._drive(self._flows.read_messages(op))

    async def read_context(self, op: ops.ReadOp) -> builtins.list[tuple[str, str]] | None:
        """See AsyncBackend.read_context."""
        return await self._drive(self._flows.read_context(op))

    async def update(self, op: ops.UpdateOp) -> ops.UpdateResult:
        """See AsyncBackend.update."""
        return await self._drive(self._flows.update(op))

    async def save_state(self, op: ops.SaveStateOp) -> ops.StateResult:
        """See AsyncBackend.save_state."""
        return await self._drive(self._flows.save_state(op))

    async def load_state(self, op: ops.LoadStateOp) -> tuple[ops.Outcome, ops.StateRow | None]:
        """See AsyncBackend.load_state."""
        return await self._drive(self._flows.load_state(op))

    async def list(self, op: ops.ListOp) -> builtins.list[ops.ConvRow]:
        """See AsyncBackend.list."""
        return await self._drive(self._flows.list(op))

    async def counts(self, op: ops.CountsOp) -> ops.CountsRow:
        """See AsyncBackend.counts."""
        return await self._drive(self._flows.counts(op))

    async def delete(self, op: ops.DeleteOp) -> bool:
        """See AsyncBackend.delete."""
        return await self._drive(self._flows.delete(op))

    async def delete_contact(self, op: ops.DeleteContactOp) -> int:
        """See AsyncBackend.delete_contact."""
        return await self._drive(self._flows.delete_contact(op))

    async def sweep(self, op: ops.SweepOp) -> ops.SweepRow:
        """See AsyncBackend.sweep."""
        return await self._drive(self._flows.sweep(op))

    async def read_events(
        self, op: ops.EventsOp, wait: float
    ) -> builtins.list[ops.EventRow] | None:
        """See AsyncBackend.read_events."""
        return await self._drive(self._flows.read_events(op, wait))

    async def acquire_lease(self, op: ops.LeaseOp) -> ops.LeaseResult:
        """See AsyncBackend.acquire_lease."""
        return await self._drive(self._flows.acquire_lease(op))

    async def release_lease(self, op: ops.ReleaseOp) -> None:
        """See AsyncBackend.release_lease."""
        await self._drive(self._flows.release_lease(op))

    async def remember(self, op: ops.RememberOp) -> ops.FactRow:
        """See AsyncBackend.remember."""
        return await self._drive(self._flows.remember(op))

    async def recall(self, op: ops.RecallOp) -> builtins.list[ops.FactRow]:
        """See AsyncBackend.recall."""
        return await self._drive(self._flows.recall(op))


async def _aclose(client: aioredis.Redis | aioredis.RedisCluster) -> None:
    """Close a client and disconnect its pool (a cluster client closes its nodes itself)."""
    await client.aclose()
    if isinstance(client, aioredis.Redis):
        await client.connection_pool.disconnect()
