"""``/readyz`` on Redis and PostgreSQL: the probe makes one attempt on a connection of its own,
so it answers as soon as the server does, whatever the requests' retries and pool are doing."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests._servers import cleanup_url, isolated_url, postgres_cluster, require_reachable
from tests.service._service_helpers import PrivateRedis, client_for, wait_for


@pytest.mark.redis
def test_readyz_pings_once_and_is_ready_as_soon_as_redis_is_back(
    private_redis: PrivateRedis,
) -> None:
    # the requests' calls retry for up to 30 s (pauses of up to 1 s), through one connection
    store = private_redis.url + "?prefix=svc-ready&retries=100&timeout=30&pool_size=1"
    with client_for(store, ready_timeout=20) as api:
        assert api.get("/readyz").status_code == 200
        cid = api.post("/v1/chat", json={"message": "hi"}).json()["conversation_id"]

        private_redis.stop()
        # a request retrying through the outage, on the requests' only connection
        retrying = threading.Thread(target=lambda: api.get(f"/v1/conversations/{cid}"))
        retrying.start()
        down = api.get("/readyz")
        assert down.status_code == 503
        message = down.json()["error"]["message"]
        # one failed attempt: not the store call's retries until the probe's deadline (20 s)
        assert "ConnectionError" in message and "attempts" not in message, message
        assert "did not answer within" not in message

        private_redis.start()  # returns once the server answers PING
        # the first probe after that is ready: it neither waited for the retrying request's
        # connection nor paused in a retry backoff
        ready = api.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        retrying.join(30)
        assert not retrying.is_alive()
        metrics = api.get("/metrics").text
        assert 'threadkeep_store_operations_total{op="ping",outcome="ok"' in metrics


@pytest.mark.postgres
def test_readyz_on_postgres_pings_once_and_is_ready_as_soon_as_the_server_is_back() -> None:
    with postgres_cluster() as cluster:
        # the requests' calls retry for up to 30 s (pauses of up to 1 s), through one connection
        store = cluster.url + "?schema=svc_ready&retries=100&timeout=30&pool_size=1"
        with client_for(store, ready_timeout=20) as api:
            assert api.get("/readyz").status_code == 200
            cid = api.post("/v1/chat", json={"message": "hi"}).json()["conversation_id"]

            cluster.stop("immediate")
            retrying = threading.Thread(target=lambda: api.get(f"/v1/conversations/{cid}"))
            retrying.start()
            down = api.get("/readyz")
            assert down.status_code == 503
            message = down.json()["error"]["message"]
            # one failed attempt on the probe's own connection, not the requests' retries
            assert "postgresql" in message and "did not answer within" not in message, message

            cluster.start()  # returns once the server accepts connections
            ready = api.get("/readyz")
            assert ready.status_code == 200, ready.text
            retrying.join(40)
            assert not retrying.is_alive()


@pytest.mark.postgres
def test_readyz_on_postgres_does_not_wait_for_a_busy_request_pool(
    tmp_path: Path, run_id: str
) -> None:
    # the requests' only pooled connection is busy (an append waiting for a row lock another
    # session holds): the server answers, so the worker is ready; the probe must not queue
    # behind the requests for a pooled connection (it did: 503 at the ready timeout)
    url = isolated_url("postgres", tmp_path, f"{run_id}_busy")
    require_reachable(url)
    schema = url.rsplit("schema=", 1)[1]
    try:
        with client_for(url + "&timeout=30&pool_size=1", ready_timeout=2) as api:
            assert api.get("/readyz").status_code == 200
            cid = api.post("/v1/chat", json={"message": "hi"}).json()["conversation_id"]
            with psycopg.connect(url.split("?", 1)[0]) as holder:
                holder.execute(
                    sql.SQL("SELECT 1 FROM {}.conversations WHERE id = %s FOR UPDATE").format(
                        sql.Identifier(schema)
                    ),
                    (cid,),
                )
                body = {"role": "agent", "content": "waits for the row lock"}
                path = f"/v1/conversations/{cid}/messages"
                waiting = threading.Thread(target=lambda: api.post(path, json=body))
                waiting.start()
                wait_for(lambda: _lock_waits(holder, schema) == 1, 20, "the append to wait")
                ready = api.get("/readyz")
                holder.rollback()  # lets the append go on
            waiting.join(30)
            assert not waiting.is_alive()
            assert ready.status_code == 200, ready.text
    finally:
        cleanup_url(url)


def _lock_waits(conn: psycopg.Connection[Any], schema: str) -> int:
    """Sessions of the store's pool waiting for a lock (seen from another transaction)."""
    with psycopg.connect(conn.info.dsn, autocommit=True) as other:
        row = other.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type = 'Lock'",
            (f"threadkeep:{schema}"[:63],),
        ).fetchone()
    return int(row[0]) if row else 0
