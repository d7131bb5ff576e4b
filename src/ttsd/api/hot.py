"""The hot paths: the few requests a voice bot sends thousands of times a second (a synthesis that is
a cache hit, the same through the OpenAI route, a task poll, an audio file), answered without
FastAPI's routing, dependency injection and response re-validation, which cost several times more
than the answer itself.

It is the same path, shortened, not a second one:

- the body is parsed by the route's own pydantic model (``model_validate`` on what ``orjson``
  parsed, as FastAPI validates what ``json`` parsed);
- the caller is authenticated and admitted by the same functions as the routes' dependencies, and
  each route's ``answer`` function builds the response for both;
- errors become responses through the app's own exception handlers;
- the metrics and the access log (``Observability``, outside this layer) see the route FastAPI
  would have matched.

Anything else (a query string, a content type other than JSON, a body that does not parse or
validate, a mounted root path) goes to FastAPI untouched, with the body replayed, so its answer is
FastAPI's own: error bodies come from one place.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import TtsdError
from ..prepare import SynthesisRequest
from ..service import TtsService
from .deps import annotate
from .models import SpeechBody, SynthesizeBody
from .routes import audio, speech, synthesize, tasks
from .security import Caller, admit, authenticate

M = TypeVar("M", bound=BaseModel)
_Handler = Callable[[Scope, Receive, TtsService, bytes], Awaitable[ASGIApp]]

_TASKS = "/v1/tasks/"
_AUDIO = "/v1/audio/"


class _Declined(Exception):
    """The hot path does not answer this request; FastAPI will."""


class HotPaths:
    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._routes: dict[tuple[str, str], BaseRoute] = {}

    def _route(self, method: str, path: str) -> BaseRoute | None:
        """The route FastAPI would match: ``Observability`` labels metrics and logs with its path."""
        if not self._routes:
            for module in (synthesize, speech, tasks, audio):
                for route in module.router.routes:
                    for verb in getattr(route, "methods", None) or ():
                        self._routes[(verb, getattr(route, "path", ""))] = route
        return self._routes.get((method, path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["query_string"] or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/v1/synthesize":
            await self._serve(scope, receive, send, "/v1/synthesize", self._synthesize)
        elif method == "POST" and path == "/v1/audio/speech":
            await self._serve(scope, receive, send, "/v1/audio/speech", self._speech)
        elif method == "GET" and path.startswith(_TASKS) and _leaf(path, _TASKS):
            await self._serve(scope, receive, send, "/v1/tasks/{task_id}", self._task)
        elif method in ("GET", "HEAD") and path.startswith(_AUDIO) and _leaf(path, _AUDIO):
            await self._serve(scope, receive, send, "/v1/audio/{audio_id}", self._audio)
        else:
            await self.app(scope, receive, send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, template: str, handler: _Handler
    ) -> None:
        route = self._route(scope["method"], template)
        if route is not None:
            scope["route"] = route
        service: TtsService = self.api.state.service
        body = b""
        try:
            if scope["method"] == "POST":
                body, disconnected = await _read_body(receive)
                if disconnected:
                    return
            response = await handler(scope, receive, service, body)
        except _Declined:
            scope.pop("route", None)
            await self.app(scope, _replay(body, receive), send)
            return
        except (TtsdError, HTTPException) as exc:
            response = await self._handled(scope, exc)
        await response(scope, receive, send)

    async def _handled(self, scope: Scope, exc: Exception) -> ASGIApp:
        """The response the app's own exception handler gives for ``exc``."""
        for cls in type(exc).__mro__:
            handler = self.api.exception_handlers.get(cls)
            if handler is not None:
                response = handler(Request(scope), exc)
                return await response if inspect.isawaitable(response) else response
        raise exc

    async def _synthesize(self, scope: Scope, receive: Receive, service: TtsService, body: bytes) -> ASGIApp:
        wanted, _ = _parse(scope, service, body, _synthesis)
        headers = _headers(scope)
        caller = await _caller(scope, service, headers)
        await admit(service, caller)
        key = headers.get("idempotency-key")
        return await synthesize.answer(scope, service, wanted, caller, redirect=False, idempotency_key=key)

    async def _speech(self, scope: Scope, receive: Receive, service: TtsService, body: bytes) -> ASGIApp:
        wanted, stream_format = _parse(scope, service, body, _speech)
        caller = await _caller(scope, service, _headers(scope))
        await admit(service, caller)
        return await speech.answer(scope, receive, service, wanted, caller, stream_format)

    async def _task(self, scope: Scope, receive: Receive, service: TtsService, body: bytes) -> ASGIApp:
        await _caller(scope, service, _headers(scope))  # the key check, as for every /v1 route
        return await tasks.answer(scope, service, scope["path"][len(_TASKS) :])

    async def _audio(self, scope: Scope, receive: Receive, service: TtsService, body: bytes) -> ASGIApp:
        return await audio.answer(scope, service, scope["path"][len(_AUDIO) :])


def _leaf(path: str, prefix: str) -> bool:
    """True when the rest of the path is one non-empty segment, as a ``{param}`` matches it."""
    rest = path[len(prefix) :]
    return bool(rest) and "/" not in rest


# What a body asks: the request's fields and (for speech) its stream format. Plain tuples of strings
# and numbers, which the cyclic collector stops tracking: a parsed model is several objects it would
# scan at every full collection, and a working set of them makes those pauses long.
Parsed = tuple[tuple[Any, ...], str]


def _synthesis(body: bytes) -> Parsed:
    return tuple(_validated(body, SynthesizeBody).to_request()), ""


def _speech(body: bytes) -> Parsed:
    parsed = _validated(body, SpeechBody)
    return tuple(parsed.to_request()), parsed.stream_format


def _parse(
    scope: Scope, service: TtsService, body: bytes, reader: Callable[[bytes], Parsed]
) -> tuple[SynthesisRequest, str]:
    content_type = next((value for name, value in scope["headers"] if name == b"content-type"), None)
    if content_type is None or content_type.split(b";", 1)[0].strip().lower() != b"application/json":
        raise _Declined
    if len(body) <= _PARSED_MAX_BYTES:
        fields, extra = _remembered(service.settings.hot_entries, reader)(body)
    else:
        fields, extra = reader(body)
    return SynthesisRequest._make(fields), extra


def _validated(body: bytes, model: type[M]) -> M:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Declined from None
    if not isinstance(data, dict):
        raise _Declined
    try:
        return model.model_validate(data)
    except ValidationError:
        raise _Declined from None


# Bodies repeat as texts do: a body already validated is not validated again (only successes are
# remembered), for as many as TTSD_HOT_ENTRIES.
_PARSED_MAX_BYTES = 2048


@functools.cache
def _remembered(size: int, reader: Callable[[bytes], Parsed]) -> Callable[[bytes], Parsed]:
    """``reader``, remembering ``size`` bodies (one memory per size: the settings are fixed)."""
    return functools.lru_cache(maxsize=size)(reader)


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by (lower-case) name; for a repeated header the first one counts, as
    with Starlette's ``Headers.get``."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])}


async def _caller(scope: Scope, service: TtsService, headers: dict[str, str]) -> Caller:
    client = scope.get("client")
    caller = await authenticate(service, headers, {}, client[0] if client else None)
    if caller.tenant is not None:
        annotate(scope, tenant=caller.tenant.name)
    return caller


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole request body, and whether the client left while sending it. The body limit is
    enforced by ``BodyLimitMiddleware`` (outside), which raises HTTPException(413) from here."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for FastAPI after the body was read here: the body once, then the real stream."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
