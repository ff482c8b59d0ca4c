"""``service/hot.py``: the chat turn and the append answer as FastAPI's routes would, byte for
byte, without FastAPI's routing and dependency solving; anything else goes on to FastAPI. And
``MessageOut.of``: the JSON of ``Message.to_dict()`` without its deep copy."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import fastapi.dependencies.utils
import pytest
from fastapi import FastAPI
from prometheus_client import generate_latest

import threadkeep._models
from threadkeep import Message
from threadkeep.service.app import create_app
from threadkeep.service.deps import get_store, public_caller_of, tenant_of
from threadkeep.service.hot import HotRoutes
from threadkeep.service.routers import chat, messages
from threadkeep.service.schemas import AppendIn, ChatIn, MessageOut
from threadkeep.service.settings import ServiceSettings

KEY = "hot-key"
_ID = re.compile(rb"[0-9a-z]{26}")
_TIME = re.compile(rb"\d{4}-\d\d-\d\dT[0-9:.+]+")
Exchange = tuple[int, list[tuple[bytes, bytes]], bytes]


def _app(hot: bool, **settings: Any) -> FastAPI:
    app = create_app(
        ServiceSettings(
            store="memory://", bot="echo", api_keys=f"t:{KEY}", rate_limit=0, **settings
        )
    )
    if not hot:  # the same app with every request routed by FastAPI
        app.user_middleware = [m for m in app.user_middleware if m.cls is not HotRoutes]  # type: ignore[comparison-overlap]
    return app


async def _call(
    app: FastAPI,
    path: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    chunks: int = 1,
) -> Exchange:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80), "state": {}}  # fmt: skip
    size = -(-len(body) // chunks) or 1
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    incoming = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent: list[Any] = []

    async def receive() -> Any:
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], list(start["headers"]), out


def _headers(
    *, auth: str | None = KEY, ctype: str | None = "application/json", **more: str
) -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"test")]
    if auth is not None:
        headers.append((b"authorization", f"Bearer {auth}".encode()))
    if ctype is not None:
        headers.append((b"content-type", ctype.encode()))
    headers += [(k.replace("_", "-").encode(), v.encode()) for k, v in more.items()]
    return headers


def _requests(conversation: str) -> Iterator[tuple[str, bytes, list[tuple[bytes, bytes]], int]]:
    """Requests of both routes, answered and refused in each way the contract has."""
    chat, append = "/v1/chat", f"/v1/conversations/{conversation}/messages"
    ok = json.dumps({"message": "héllo ☃", "conversation_id": conversation}).encode()
    yield chat, ok, _headers(), 1
    yield chat, ok, _headers(), 3  # a body in three chunks
    yield chat, json.dumps({"message": "hi", "contact_id": "c9"}).encode(), _headers(), 1
    keyed = json.dumps({"message": "k", "contact_id": "c8"}).encode()
    yield chat, keyed, _headers(idempotency_key="key-1"), 1
    yield chat, keyed, _headers(idempotency_key="key-1"), 1  # the replay
    yield chat, b'{"message": "other", "contact_id": "c8"}', _headers(idempotency_key="key-1"), 1
    yield chat, ok, _headers(ctype="application/json; charset=utf-8"), 1
    yield chat, json.dumps({"message": "x", "conversation_id": "nope"}).encode(), _headers(), 1
    yield chat, ok, _headers(auth=None), 1  # 401
    yield chat, ok, _headers(auth="wrong"), 1
    yield chat, ok, _headers(ctype=None), 1  # FastAPI's answer to a body of no type
    yield chat, ok, _headers(ctype="text/plain"), 1
    yield chat, b'{"message": ', _headers(), 1  # not JSON
    yield chat, b"[1, 2]", _headers(), 1
    yield chat, b'{"message": ""}', _headers(), 1
    yield chat, b'{"message": "x", "extra": 1}', _headers(), 1
    yield chat, b"", _headers(), 1
    yield chat, ok, _headers(idempotency_key=""), 1
    yield chat, ok, _headers(idempotency_key="k" * 257), 1
    msg = {"role": "agent", "content": "ça va", "metadata": {"n": 1.5e20, "l": [1, None]},
           "payload": {"type": "x", "v": [True, 0.1]}}  # fmt: skip
    yield append, json.dumps(msg).encode(), _headers(), 1
    yield append, json.dumps(msg).encode(), _headers(idempotency_key="a-1"), 2
    yield append, json.dumps(msg).encode(), _headers(idempotency_key="a-1"), 1  # replay
    other = json.dumps({**msg, "content": "else"}).encode()
    yield append, other, _headers(idempotency_key="a-1"), 1  # 422: the key's message differs
    yield append, b'{"role": "user"}', _headers(), 1
    yield append, b'{"role": "nobody", "content": "x"}', _headers(), 1
    yield append, b'{"role": "user", "content": "x"}', _headers(auth=None), 1
    user = b'{"role": "user", "content": "x"}'
    yield "/v1/conversations/nope/messages", user, _headers(), 1
    yield f"/v1/conversations/{'x' * 129}/messages", user, _headers(), 1


def _normal(exchange: Exchange) -> Exchange:
    """The exchange without what differs between two runs: ids and times (same lengths)."""
    status, headers, body = exchange
    length = dict(headers)[b"content-length"]
    assert int(length) == len(body)
    body = _ID.sub(b"<id>", _TIME.sub(b"<time>", body))
    return status, headers, body


def _run(hot: bool) -> list[Exchange]:
    app = _app(hot)

    async def run() -> list[Exchange]:
        async with app.router.lifespan_context(app):
            conv = await app.state.store.start("c1", tenant="t")
            return [_normal(await _call(app, *request)) for request in _requests(conv.id)]

    return asyncio.run(run())


def test_the_hot_routes_answer_byte_for_byte_as_fastapi_does() -> None:
    hot, routed = _run(True), _run(False)
    assert [h[0] for h in hot] == [r[0] for r in routed]
    for i, (a, b) in enumerate(zip(hot, routed, strict=True)):
        assert a == b, i
    statuses = {h[0] for h in hot}
    assert {200, 201, 401, 404, 422} <= statuses


def test_the_hot_routes_do_not_solve_dependencies(monkeypatch: pytest.MonkeyPatch) -> None:
    solved: list[str] = []
    solve = fastapi.dependencies.utils.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs["request"].url.path)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    app = _app(True)

    async def run() -> list[int]:
        async with app.router.lifespan_context(app):
            conv = await app.state.store.start("c1", tenant="t")
            body = json.dumps({"message": "hi", "conversation_id": conv.id}).encode()
            chat = await _call(app, "/v1/chat", body, _headers())
            path = f"/v1/conversations/{conv.id}/messages"
            append = await _call(app, path, b'{"role": "user", "content": "x"}', _headers())
            refused = await _call(app, path, b'{"role": "nobody"}', _headers())  # FastAPI's 422
            return [chat[0], append[0], refused[0]]

    assert asyncio.run(run()) == [200, 201, 422]
    # only the refused body went through FastAPI
    assert len(solved) == 1 and solved[0].endswith("/messages")


def test_metrics_and_the_log_name_the_route(caplog: pytest.LogCaptureFixture) -> None:
    app = _app(True, log_level="INFO")

    async def run() -> str:
        async with app.router.lifespan_context(app):
            conv = await app.state.store.start("c1", tenant="t")
            path = f"/v1/conversations/{conv.id}/messages"
            await _call(app, path, b'{"role": "user", "content": "x"}', _headers())
            await _call(app, "/v1/chat", b'{"message": "x", "contact_id": "c"}', _headers())
            return generate_latest(app.state.metrics.registry).decode()

    with caplog.at_level("INFO", logger="threadkeep.access"):
        text = asyncio.run(run())
    assert 'route="/v1/conversations/{conversation_id}/messages"' in text
    assert 'route="/v1/chat"' in text
    lines = [r.getMessage() for r in caplog.records if r.name == "threadkeep.access"]
    assert any('"route":"/v1/chat"' in line and '"tenant":"t"' in line for line in lines)


@pytest.mark.parametrize("visitor", [False, True])
def test_message_out_is_to_dict_without_its_deep_copy(
    visitor: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
    # metadata and payloads as a store returns them: decoded JSON (a datetime is refused on
    # the way in, so none comes out); a tuple stands for any sequence
    messages = [
        Message("c", 1, "user", "hi", at),
        Message(
            "c",
            2,
            "assistant",
            "ok",
            at,
            {"n": [1, (2, 3)], "at": at.isoformat(), "d": {"x": None}},
            "key",
            payload={"type": "t", "v": [True, 0.5]},
        ),  # fmt: skip
        Message(
            "c",
            3,
            "agent",
            "",
            at,
            {"delivery": {"state": "sent", "provider_id": "p"}},
            payload=[{"a": 1}],
        ),  # fmt: skip
    ]
    expected = []
    for m in messages:
        data = m.to_dict()
        if visitor:
            data["metadata"], data["payload"] = {}, None
        expected.append(MessageOut.model_validate(data).model_dump_json())

    def no_deep_copy(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("dataclasses.asdict")

    monkeypatch.setattr(threadkeep._models, "asdict", no_deep_copy)
    got = [MessageOut.of(m, visitor=visitor).model_dump_json() for m in messages]
    assert got == expected


def _shape(route: Any) -> tuple[list[Any], list[str], list[str], list[str], list[Any]]:
    d = route.dependant
    return (
        [sub.call for sub in d.dependencies],
        [p.alias for p in d.header_params],
        [p.name for p in d.path_params],
        [p.name for p in d.query_params] + [p.name for p in d.cookie_params],
        [p.field_info.annotation for p in d.body_params],
    )


def test_the_hot_routes_are_what_hot_py_calls() -> None:
    # hot.py calls these routes' dependencies by hand: a dependency, parameter or override
    # added to them (or to their router or the app) must fail here, not be skipped silently
    app = create_app(ServiceSettings(store="memory://", bot="echo", api_keys="t:k"))
    assert not app.router.dependencies and not app.dependency_overrides
    for router in (chat.router, messages.router):
        assert not router.dependencies
    by_name = {getattr(r, "name", ""): r for r in (*chat.router.routes, *messages.router.routes)}
    assert _shape(by_name["chat"]) == ([public_caller_of], ["Idempotency-Key"], [], [], [ChatIn])
    assert _shape(by_name["append_message"]) == (
        [tenant_of, get_store],
        ["Idempotency-Key"],
        ["conversation_id"],
        [],
        [AppendIn],
    )
