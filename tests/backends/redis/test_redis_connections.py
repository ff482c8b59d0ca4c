"""Redis connections: URLs (password, db, TLS), the pool bound, errors naming the host."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import pytest
import redis

import threadkeep
from tests._servers import RedisServer, free_port
from tests.backends.redis._helpers import CALL_BOUND, certificates, others_after_close
from threadkeep import BackendUnavailable
from threadkeep.backends.redis._keys import Keys

pytestmark = pytest.mark.redis


def test_unreachable_server_names_host_not_password() -> None:
    """open() itself connects: a closed port fails there, on one line, naming the cause."""
    port = free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/0?timeout=1&retries=2"
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        threadkeep.open(url)
    assert time.monotonic() - started < CALL_BOUND
    message = str(info.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message
    assert "s3cret" not in message
    assert "Connection refused" in message
    assert "(after 3 attempts)" in message  # retries=2: sent three times
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    with pytest.raises(BackendUnavailable, match=r"\(after 4 attempts\)"):
        threadkeep.open(f"redis://127.0.0.1:{port}/0?timeout=5")  # three retries by default

    async def main() -> None:
        with pytest.raises(BackendUnavailable, match="Connection refused"):
            await threadkeep.open_async(url)

    asyncio.run(main())


def test_password_and_db_come_from_the_url(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, appendonly=False, extra=("--requirepass", "s3cret"))
    server.start()
    try:
        with threadkeep.open(f"redis://:s3cret@127.0.0.1:{server.port}/3?prefix=auth") as store:
            conv = store.start("c-1")
        raw = redis.Redis(host="127.0.0.1", port=server.port, password="s3cret", db=3)
        assert raw.exists(Keys("auth").conversation(conv.id))
        raw.close()
        with pytest.raises(BackendUnavailable) as info:
            threadkeep.open(f"redis://:wrong@127.0.0.1:{server.port}/3?retries=3")
        assert "wrong" not in str(info.value) and f"127.0.0.1:{server.port}" in str(info.value)
        assert isinstance(info.value.__cause__, redis.AuthenticationError)
        assert "attempts" not in str(info.value)  # a wrong password is not retried
    finally:
        server.kill()


def test_the_pool_holds_at_most_pool_size_connections(own_server: RedisServer) -> None:
    with threadkeep.open(own_server.url + "?prefix=pool&pool_size=2") as store:
        conv = store.start("c-1")
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for i in range(20):
                    store.append(conv.id, "user", f"w{worker}-{i}")
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert store.get(conv.id).message_count == 160
        raw = own_server.client()
        clients = [c for c in raw.client_list() if c["cmd"] != "client|list"]
        assert len(clients) <= 2, clients
    assert others_after_close(raw) == []  # closed: released
    raw.close()


def test_rediss_urls_talk_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found")
    ca, cert, key = certificates(tmp_path)
    tls_port = free_port()
    server = RedisServer(
        tmp_path,
        appendonly=False,
        extra=(
            *("--tls-port", str(tls_port), "--tls-cert-file", str(cert)),
            *("--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)),
            *("--tls-auth-clients", "no"),
        ),
    )
    server.start()  # the plain port too, to check where the data went
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # trust the private CA (system store stand-in)
        with threadkeep.open(f"rediss://127.0.0.1:{tls_port}/0?prefix=tls") as store:
            conv = store.start("c-1")
            store.append(conv.id, "user", "over TLS")
            assert [m.content for m in store.messages(conv.id)] == ["over TLS"]
        raw = server.client()
        assert raw.exists(Keys("tls").conversation(conv.id))
        raw.close()
        with pytest.raises(BackendUnavailable):  # a TLS port does not talk plain RESP
            threadkeep.open(f"redis://127.0.0.1:{tls_port}/0?timeout=1&retries=0")
    finally:
        server.kill()


def test_event_followers_wait_on_their_own_pool(own_server: RedisServer) -> None:
    with threadkeep.open(own_server.url + "?prefix=follow&pool_size=1&timeout=5") as store:
        conv = store.start("c-1", tenant="t-1")
        raw = own_server.client()
        follower = threading.Thread(target=lambda: list(store.events(tenant="t-2", timeout=3)))
        follower.start()
        try:
            deadline = time.monotonic() + 30
            while not any(c["cmd"] == "xread" for c in raw.client_list()):
                assert time.monotonic() < deadline, "the follower never blocked"
                time.sleep(0.01)
            # the only command connection is free although the follower blocks: appends go on
            store.append(conv.id, "user", "while someone follows")
            commands = [c["cmd"] for c in raw.client_list() if c["cmd"] != "client|list"]
            assert sorted(commands) == ["evalsha", "xread"], commands
        finally:
            follower.join(30)
        raw.close()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_followers_beyond_the_pool_take_turns(own_server: RedisServer, api: str) -> None:
    """8 followers in 1 s slices (like the SSE route) on a blocking pool of 2 with a 1 s
    timeout: none fails for want of a connection, at most 2 block at once, one event reaches
    every follower."""
    url = own_server.url + "?prefix=turns&pool_size=2&timeout=1"
    followers = 8
    got: dict[int, str] = {}
    errors: list[BaseException] = []
    raw = own_server.client()
    most = 0

    def watch(seconds: float) -> None:
        nonlocal most
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            blocked = sum(c["cmd"] == "xread" for c in raw.client_list())
            most = max(most, blocked)
            time.sleep(0.05)

    if api == "sync":
        store = threadkeep.open(url)
        conv = store.start("c-1")
        last = [e.id for e in store.events(timeout=0)][-1]

        def follow(i: int) -> None:
            try:
                while not (events := list(store.events(after=last, timeout=1.0))):
                    pass
                got[i] = events[0].kind
            except BaseException as exc:  # recorded: the assertion below names it
                errors.append(exc)

        threads = [threading.Thread(target=follow, args=(i,)) for i in range(followers)]
        for t in threads:
            t.start()
        try:
            watch(3.0)
            store.append(conv.id, "user", "hi")
            for t in threads:
                t.join(30)
        finally:
            store.close()
    else:

        async def main() -> None:
            astore = await threadkeep.open_async(url)
            try:
                conv = await astore.start("c-1")
                last = [e.id async for e in astore.events(timeout=0)][-1]

                async def follow(i: int) -> None:
                    try:
                        while not (
                            events := [e async for e in astore.events(after=last, timeout=1.0)]
                        ):
                            pass
                        got[i] = events[0].kind
                    except Exception as exc:  # recorded: the assertion below names it
                        errors.append(exc)

                tasks = [asyncio.create_task(follow(i)) for i in range(followers)]
                await asyncio.to_thread(watch, 3.0)
                await astore.append(conv.id, "user", "hi")
                await asyncio.wait_for(asyncio.gather(*tasks), 30)
            finally:
                await astore.aclose()

        asyncio.run(main())
    raw.close()
    assert errors == []
    assert 1 <= most <= 2
    assert got == dict.fromkeys(range(followers), "message.appended")
