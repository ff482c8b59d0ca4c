"""The store's sessions speak UTF-8 whatever client encoding the environment asks for.

libpq takes the client encoding from ``PGCLIENTENCODING`` (or a role's or database's
setting); psycopg then encodes text with that encoding's codec. Under EUC_JP (or SJIS) the
codec turns ``¥`` into byte 0x5C, a backslash to the server, so text was stored other than
it was sent (found in session 9's review). The store pins ``client_encoding`` to UTF8.
"""

from __future__ import annotations

import pytest

import threadkeep
from tests.backends.postgres._helpers import url_of

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("encoding", ["EUC_JP", "SJIS", "SQL_ASCII", "LATIN1"])
def test_text_reads_back_as_sent_whatever_the_client_encoding(
    schema: str, encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGCLIENTENCODING", encoding)
    text = "¥n ¥' ¥\\ 円 — ü"
    with threadkeep.open(url_of(schema)) as store:
        conv = store.start("c¥1", tenant="t", metadata={"note": text})
        message = store.append(conv.id, "user", text, metadata={"a": text}, idempotency_key="k¥'1")
        again = store.append(conv.id, "user", text, metadata={"a": text}, idempotency_key="k¥'1")
        assert again.replayed and again.seq == message.seq
        store.remember("c¥1", "fact", text, tenant="t")
        (read,) = store.messages(conv.id, tenant="t")
        assert (read.content, read.metadata, read.idempotency_key) == (text, {"a": text}, "k¥'1")
        assert store.get(conv.id, tenant="t").metadata == {"note": text}
        assert store.recall("c¥1", "fact", tenant="t")[0].value == text
        assert store.resume("c¥1", tenant="t").id == conv.id


def test_an_async_store_pins_it_too(schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    monkeypatch.setenv("PGCLIENTENCODING", "EUC_JP")

    async def main() -> list[threadkeep.Message]:
        store = await threadkeep.open_async(url_of(schema))
        try:
            conv = await store.start("c", metadata={"a": "¥n"})
            await store.append(conv.id, "user", "¥'", metadata={"a": "¥n"})
            return await store.messages(conv.id)
        finally:
            await store.aclose()

    (read,) = asyncio.run(main())
    assert (read.content, read.metadata) == ("¥'", {"a": "¥n"})
