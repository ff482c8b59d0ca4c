"""The two routes a chat load calls most, served without FastAPI's routing and dependency solving.

``POST /v1/chat`` and ``POST /v1/conversations/{conversation_id}/messages`` with a JSON body
that their input model accepts, a valid ``Idempotency-Key`` (or none) and a valid conversation
id are answered here: the same route functions, the same dependencies (called directly, in
FastAPI's order: the caller, then the store), the same exception handlers, the same response
bytes. Whatever else reaches these paths — another content type, a body that is not valid
JSON or not valid input, a header or path parameter FastAPI would refuse, a mounted app — goes
on to FastAPI unchanged (its body replayed), so its error answers stay FastAPI's own.

Routing a request through FastAPI costs a linear match over every route, a dependency solve
per request, the response model validated again and the request/response objects of each
layer: about a third of the CPU of an append (docs/performance.md, "Third round").
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request, Response
from pydantic import ValidationError
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadkeep.service.deps import get_store, public_caller_of, tenant_of
from threadkeep.service.routers import chat, messages
from threadkeep.service.schemas import AppendIn, ChatIn, ChatOut

__all__ = ["HotRoutes"]

_PREFIX = "/v1/conversations/"
_SUFFIX = "/messages"
_KEY = b"idempotency-key"
_PARSED = "threadkeep.hot"  # the scope key holding what was parsed: (body, key, conversation)


def _route(routes: list[BaseRoute], name: str) -> BaseRoute:
    return next(r for r in routes if getattr(r, "name", None) == name)


class HotRoutes:
    """Pure ASGI middleware: the chat turn and the append, straight to their route functions."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self._chat_route = _route(chat.router.routes, "chat")
        self._append_route = _route(messages.router.routes, "append_message")
        # FastAPI's own handlers, as its ExceptionMiddleware (inside this one) has them
        handlers = {k: v for k, v in api.exception_handlers.items() if k not in (500, Exception)}
        self._chat = ExceptionMiddleware(self._serve_chat, handlers=handlers, debug=api.debug)
        self._append = ExceptionMiddleware(self._serve_append, handlers=handlers, debug=api.debug)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        conversation_id: str | None = None
        if path == "/v1/chat":
            model: type[ChatIn | AppendIn] = ChatIn
        elif path.startswith(_PREFIX) and path.endswith(_SUFFIX):
            conversation_id = path[len(_PREFIX) : -len(_SUFFIX)]
            if not 1 <= len(conversation_id) <= 128 or "/" in conversation_id:
                await self.app(scope, receive, send)
                return
            model = AppendIn
        else:
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        parsed = await self._parse(scope, receive, received, model)
        if parsed is None:
            await self.app(scope, _replaying(received, receive), send)
            return
        scope[_PARSED] = (parsed[0], parsed[1], conversation_id)
        if conversation_id is None:
            scope["route"], scope["endpoint"] = self._chat_route, chat.chat
            scope["path_params"] = {}
            await self._chat(scope, _replaying(received, receive), send)
        else:
            scope["route"], scope["endpoint"] = self._append_route, messages.append_message
            scope["path_params"] = {"conversation_id": conversation_id}
            await self._append(scope, _replaying(received, receive), send)

    @staticmethod
    async def _parse(
        scope: Scope, receive: Receive, received: list[Message], model: type[ChatIn | AppendIn]
    ) -> tuple[Any, str | None] | None:
        """Read the body; return it as ``model`` with the key, or None: FastAPI's to answer."""
        content_type: bytes | None = None
        key: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                if content_type is not None:
                    return None
                content_type = value
            elif name == _KEY:
                if key is not None:
                    return None
                key = value
        if content_type is None or content_type.split(b";")[0].strip().lower() != (
            b"application/json"
        ):
            return None
        chunks: list[bytes] = []
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        idempotency_key = None
        if key is not None:
            idempotency_key = key.decode("latin-1")
            if not 1 <= len(idempotency_key) <= 256:
                return None
        try:
            data = json.loads(b"".join(chunks))
            return model.model_validate(data), idempotency_key
        except (ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError too
            return None

    async def _serve_chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, key, _ = scope[_PARSED]
        request = Request(scope, receive, send)
        caller = await public_caller_of(request)
        answered = await chat.chat(request, caller, body, key)
        if isinstance(answered, ChatOut):  # not stored (the store was away): FastAPI's body
            answered = Response(answered.model_dump_json(), media_type="application/json")
        await answered(scope, receive, send)

    async def _serve_append(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, key, conversation_id = scope[_PARSED]
        request = Request(scope, receive, send)
        tenant = await tenant_of(request)
        store = await get_store(request)
        out = await messages.append_message(tenant, store, conversation_id, body, key)
        response = Response(out.model_dump_json(), status_code=201, media_type="application/json")
        await response(scope, receive, send)


def _replaying(received: list[Message], receive: Receive) -> Receive:
    """``receive``, giving first the messages already taken from it."""
    pending = list(received)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
