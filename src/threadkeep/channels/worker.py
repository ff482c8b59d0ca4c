"""``threadkeep worker``: the channel processor as a process of its own.

It reads the same ``THREADKEEP_*`` settings as the service (store, bot, channel secrets and API
URLs), opens the store (retrying while it is down) and answers until SIGTERM or SIGINT, which
drain: turns in flight finish, nothing new starts.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import threadkeep
from threadkeep import AsyncStore, BackendError
from threadkeep.bot import make_bot
from threadkeep.channels.config import channel_config
from threadkeep.channels.outbound import Sender
from threadkeep.channels.processor import Processor

__all__ = ["run_worker"]

log = logging.getLogger("threadkeep.channels")


class _LazyStore:
    """Opens the store on first use, again after a failure to open."""

    def __init__(self, url: str, **options: object) -> None:
        self.url = url
        self.options = options
        self.store: AsyncStore | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> AsyncStore:
        async with self._lock:
            if self.store is None:
                self.store = await threadkeep.open_async(self.url, **self.options)  # type: ignore[arg-type]
            return self.store


async def run_worker() -> None:
    """Run the processor until SIGTERM/SIGINT.

    Raises:
        InvalidInput: a bad setting, store URL or bot.
    """
    from threadkeep.service.settings import load_settings

    settings = load_settings()
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr,
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
    config = channel_config(settings)
    bot = make_bot(settings.bot)
    holder = _LazyStore(settings.store, limits=settings.limits(), retention=settings.retention())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await holder.get()
    except BackendError as exc:
        log.warning("store unreachable at start-up; retrying: %s", exc)
    log.info("channel worker serving %s with the %s bot", threadkeep.redact_url(settings.store),
             settings.bot)  # fmt: skip
    sender = Sender(config)
    try:
        await Processor(holder.get, bot, config, outbound=sender).run(stop)
    finally:
        await sender.aclose()
        if holder.store is not None:
            await holder.store.aclose()
        log.info("channel worker stopped")
