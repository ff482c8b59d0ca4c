"""4 worker processes, 200 concurrent chat turns over 20 conversations: nothing lost, no
interleaving, gap-free seq; a restart keeps everything."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._servers import cleanup_url, isolated_url, require_reachable
from tests.service._service_helpers import wait_for

CONVERSATIONS = 20
TURNS = 10  # per conversation: 200 in all, all sent at once


async def _send_all(base: str, ids: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONVERSATIONS * TURNS)
    async with httpx.AsyncClient(base_url=base, timeout=90, limits=limits) as client:
        calls = [
            client.post("/v1/chat", json={"message": f"{cid}/{t}", "conversation_id": cid})
            for t in range(TURNS)
            for cid in ids
        ]
        return await asyncio.gather(*calls)


async def _first_messages(base: str, contact: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=90) as client:
        calls = [
            client.post("/v1/chat", json={"message": f"first {i}", "contact_id": contact})
            for i in range(count)
        ]
        return await asyncio.gather(*calls)


def _check_all(base: str, ids: list[str]) -> None:
    for cid in ids:
        items = httpx.get(f"{base}/v1/conversations/{cid}/messages?last=1000", timeout=30).json()
        items = items["items"]
        assert [m["seq"] for m in items] == list(range(1, 2 * TURNS + 1)), cid
        users = [m for m in items if m["role"] == "user"]
        assert sorted(m["content"] for m in users) == sorted(f"{cid}/{t}" for t in range(TURNS))
        # each turn's reply follows its message at once: turns never interleave
        for user, reply in zip(items[::2], items[1::2], strict=True):
            assert (user["role"], reply["role"]) == ("user", "assistant")
            assert reply["content"] == "echo: " + user["content"]


def _run(live_server: Any, store: str) -> None:
    server = live_server(store, workers=4, THREADKEEP_TURN_WAIT="60")
    ids = [
        httpx.post(
            server.url + "/v1/conversations", json={"contact_id": f"c-{i}"}, timeout=30
        ).json()["id"]
        for i in range(CONVERSATIONS)
    ]
    responses = asyncio.run(_send_all(server.url, ids))
    assert [r.status_code for r in responses] == [200] * len(responses)
    assert all(r.json()["persisted"] for r in responses)
    pids: set[str] = set()
    for _ in range(20):  # a worker that has served nothing yet has no request lines: ask again
        pids = {
            line.split("worker=")[1].split('"')[1]
            for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines()
            if line.startswith("threadkeep_http_requests_total")
        }
        if pids:
            break
    assert len(pids) == 1  # each worker reports its own numbers
    _check_all(server.url, ids)

    # first messages of one new contact, all at once on every worker: one conversation
    firsts = asyncio.run(_first_messages(server.url, "+1-same-contact", 20))
    assert [r.status_code for r in firsts] == [200] * 20
    assert len({r.json()["conversation_id"] for r in firsts}) == 1

    server.restart()
    _check_all(server.url, ids)
    listed = httpx.get(server.url + "/v1/counts", timeout=30).json()
    assert listed["by_status"].get("active") == CONVERSATIONS + 1


@pytest.mark.slow
def test_four_workers_on_sqlite_lose_nothing(live_server: Any, tmp_path: Path) -> None:
    _run(live_server, f"sqlite:///{tmp_path / 'tk.db'}")


@pytest.mark.slow
@pytest.mark.redis
def test_four_workers_on_redis_lose_nothing(live_server: Any, tmp_path: Path, run_id: str) -> None:
    _on_server(live_server, isolated_url("redis", tmp_path, f"{run_id}-workers"))


@pytest.mark.slow
@pytest.mark.postgres
def test_four_workers_on_postgres_lose_nothing(
    live_server: Any, tmp_path: Path, run_id: str
) -> None:
    _on_server(live_server, isolated_url("postgres", tmp_path, f"{run_id}_workers"))


def _on_server(live_server: Any, url: str) -> None:
    require_reachable(url)
    try:
        _run(live_server, url)
    finally:
        cleanup_url(url)


def _workers(server: Any) -> set[int]:
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(server.proc.pid)],
                         capture_output=True, text=True).stdout  # fmt: skip
    return {int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line}


@pytest.mark.slow
def test_a_worker_that_stops_answering_for_7_s_is_not_killed(
    live_server: Any, tmp_path: Path
) -> None:
    # a worker starved of CPU (or still importing the service on a busy machine) does not answer
    # its supervisor's health ping for a while; uvicorn's default (5 s) then killed it with the
    # requests it held. SIGSTOP stands for the starvation.
    server = live_server(f"sqlite:///{tmp_path / 'tk.db'}", workers=2)
    wait_for(lambda: len(_workers(server)) == 2, 60, "both workers")
    before = _workers(server)
    victim = min(before)
    os.kill(victim, signal.SIGSTOP)
    try:
        time.sleep(7)
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed by its supervisor
            os.kill(victim, signal.SIGCONT)
    time.sleep(1)
    assert _workers(server) == before
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


@pytest.mark.slow
def test_a_worker_silent_past_the_configured_health_check_is_replaced(
    live_server: Any, tmp_path: Path
) -> None:
    # THREADKEEP_WORKER_HEALTHCHECK reaches uvicorn's supervisor: a hung worker is replaced once
    # it has not answered for that long (the default, 30 s, would keep it for this test's 7 s)
    server = live_server(
        f"sqlite:///{tmp_path / 'tk.db'}", workers=2, THREADKEEP_WORKER_HEALTHCHECK="2"
    )
    wait_for(lambda: len(_workers(server)) == 2, 60, "both workers")
    victim = min(_workers(server))
    os.kill(victim, signal.SIGSTOP)
    try:
        wait_for(lambda: victim not in _workers(server), 30, "the hung worker killed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGCONT)
    wait_for(lambda: len(_workers(server)) == 2, 60, "its replacement")
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
