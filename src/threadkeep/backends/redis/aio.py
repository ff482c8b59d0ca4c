"""Asynchronous Redis backend (redis.asyncio); durability and atomicity: see the package."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from threadkeep._rules.ops import Op, Result
from threadkeep._url import StoreURL
from threadkeep.backends.redis._base import RedisBase
from threadkeep.backends.redis._flows import Command, Eval, Flow, Request
from threadkeep.backends.redis._options import check_server

__all__ = ["AsyncRedisBackend"]

T = TypeVar("T")
R = TypeVar("R")


class AsyncRedisBackend(RedisBase):
    """Redis backend over an asyncio connection pool; see RedisBase."""

    def __init__(self, url: StoreURL) -> None:
        super().__init__(url)
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
                self._scripts = self._register(cluster)
                for standalone in old:
                    await _aclose(standalone)
            self._checked = True

    async def _request(self, request: Request) -> Any:
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
        call = self._call()
        try:
            return await call.aretry().call_with_retry(lambda: self._request(request), call.afailed)
        except redis.RedisError as exc:
            call.fail(exc)

    async def _drive(self, flow: Flow[T]) -> T:
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
        """See AsyncBackend.close."""
        await _aclose(self._client)
        await _aclose(self._blocking)


async def _aclose(client: aioredis.Redis | aioredis.RedisCluster) -> None:
    """Close a client and disconnect its pool (a cluster client closes its nodes itself)."""
    await client.aclose()
    if isinstance(client, aioredis.Redis):
        await client.connection_pool.disconnect()
