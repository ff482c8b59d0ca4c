"""PostgreSQL turn leases: waiters poll without queueing on the holder's row lock."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

import threadkeep
from tests.backends.postgres._helpers import SHARED, connect, url_of
from threadkeep import TurnInProgress

pytestmark = pytest.mark.postgres

WAITERS = 6
POOL = 3


def _lock_waits(schema: str) -> int:
    """How many of the store's pool sessions wait for a lock right now."""
    with psycopg.connect(SHARED, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock'",
            (f"threadkeep:{schema}"[:63],),
        ).fetchone()
    return int(row[0]) if row else 0


def test_lease_waiters_do_not_queue_on_the_holders_row_lock(schema: str) -> None:
    """While the holder is inside a write (its row lock held), 6 waiters on a pool of 3 wait
    without taking a connection into a lock wait: the store keeps serving other calls, and
    each waiter gets TurnInProgress at its timeout."""
    store = threadkeep.open(f"{url_of(schema)}&pool_size={POOL}")
    outcomes: list[str] = []
    try:
        busy = store.start(contact_id="busy")
        other = store.start(contact_id="other")
        with store.turn(busy.id, timeout=0), connect(schema) as writer:
            # the holder's write in progress: its transaction holds the row lock
            writer.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (busy.id,))

            def wait() -> None:
                try:
                    with store.turn(busy.id, timeout=1.5):
                        outcomes.append("taken")
                except TurnInProgress:
                    outcomes.append("busy")

            threads = [threading.Thread(target=wait) for _ in range(WAITERS)]
            for t in threads:
                t.start()
            waits = []
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                waits.append(_lock_waits(schema))
                assert store.get(other.id).id == other.id  # a pool connection is free
                time.sleep(0.05)
            for t in threads:
                t.join(30)
            writer.rollback()
    finally:
        store.close()
    assert max(waits) == 0, waits
    assert outcomes == ["busy"] * WAITERS
