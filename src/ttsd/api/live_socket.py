"""What the live WebSockets share, whatever their protocol (ttsd's own, ElevenLabs'): the key (a
header, ``?api_key=`` or the first message), the session, one writer for its events, the idle
timeout, and the end of the socket, which cancels every context (a caller who hangs up is a
barge-in on everything).

A protocol only says how its messages become commands and events become messages (``Wire``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..errors import IdleTimeout, MalformedRequest, TtsdError, Unauthorized
from ..live.events import Closing, Command, ContextConfig, Event, Failed
from ..live.limits import LiveLimits
from ..live.session import LiveSession
from ..service import TtsService
from .security import Caller, admit, authenticate

MAX_MESSAGE = 64 * 1024
POLICY_VIOLATION = 1008


class Wire(Protocol):
    """One protocol's messages."""

    defaults: ContextConfig

    def key(self, message: Mapping[str, Any]) -> Mapping[str, str]:
        """Headers that stand for the key a first message carries ({} if it carries none)."""

    def commands(self, message: Mapping[str, Any]) -> list[Command]:
        """What a message asks, in order; raises a TtsdError naming what is wrong with it."""

    def render(self, event: Event) -> list[dict[str, Any]]:
        """The messages an event is sent as (none: it is not part of this protocol)."""

    def closes_after(self, event: Event) -> bool:
        """Whether the socket closes once this event is sent (a single-context protocol's end)."""


def _presents_key(ws: WebSocket) -> bool:
    headers = ws.headers
    return bool(
        headers.get("authorization") or headers.get("x-api-key") or headers.get("xi-api-key")
    ) or bool(ws.query_params.get("api_key"))


def _decode(message: Mapping[str, Any]) -> dict[str, Any]:
    text = message.get("text")
    if text is None:
        raise MalformedRequest("send JSON text messages (binary frames are not read)")
    if len(text) > MAX_MESSAGE:
        raise MalformedRequest(f"messages are limited to {MAX_MESSAGE} characters")
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest("the message is not valid JSON") from exc
    if not isinstance(body, dict):
        raise MalformedRequest("each message is a JSON object")
    return body


class _Socket:
    def __init__(self, ws: WebSocket, wire: Wire, service: TtsService) -> None:
        self.ws = ws
        self.wire = wire
        self.service = service
        self.limits = LiveLimits.of(service.settings)
        self.closed = asyncio.Event()

    async def send(self, payloads: list[dict[str, Any]]) -> None:
        for payload in payloads:
            await self.ws.send_text(orjson.dumps(payload).decode())

    async def close(self, code: int) -> None:
        # ``closed`` only once the close frame is out: the reader then ends the socket, and it
        # must not cancel the writer half way through sending that frame.
        try:
            if self.ws.application_state is not WebSocketState.DISCONNECTED:
                with contextlib.suppress(Exception):
                    await self.ws.close(code=code)
        finally:
            self.closed.set()

    async def receive(self, wait: float) -> Mapping[str, Any] | None:
        """The next message (None: the client left or the socket is closing)."""
        receiving = asyncio.ensure_future(self.ws.receive())
        closing = asyncio.ensure_future(self.closed.wait())
        try:
            done, _ = await asyncio.wait({receiving, closing}, timeout=wait, return_when="FIRST_COMPLETED")
        finally:
            closing.cancel()
        if receiving not in done:
            receiving.cancel()
            with contextlib.suppress(BaseException):
                await receiving
            if closing in done or self.closed.is_set():
                return None
            raise TimeoutError
        try:
            message = receiving.result()
        except (WebSocketDisconnect, RuntimeError, OSError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        return message

    async def caller(self, first: dict[str, Any] | None) -> Caller:
        address = self.ws.client.host if self.ws.client else None
        if first is not None:
            return await authenticate(self.service, self.wire.key(first), {}, address)
        return await authenticate(self.service, self.ws.headers, self.ws.query_params, address)


async def serve(ws: WebSocket, wire: Wire) -> None:
    """Run one live socket until the client leaves, closes it, idles out or breaks a socket rule."""
    service: TtsService = ws.app.state.service
    socket = _Socket(ws, wire, service)
    await ws.accept()
    first: dict[str, Any] | None = None
    try:
        if service.tenants and not _presents_key(ws):
            message = await socket.receive(socket.limits.idle_timeout)
            if message is None:
                return
            first = _decode(message)
        caller = await socket.caller(first)
    except TimeoutError:
        await socket.send(wire.render(Failed(None, Unauthorized("no API key was sent"), fatal=True)))
        await socket.close(POLICY_VIOLATION)
        return
    except TtsdError as exc:
        await socket.send(wire.render(Failed(None, exc, fatal=True)))
        await socket.close(POLICY_VIOLATION)
        return
    session = LiveSession(
        service,
        socket.limits,
        identity=caller.identity,
        scope=service.scope_of(caller.tenant_name),
        admit=lambda: admit(service, caller),
        messages=ws.app.state.live_messages,
        defaults=wire.defaults,
    )
    writer = asyncio.create_task(_write(socket, session))
    try:
        if first is not None:
            await _take(session, wire, first)
        await _read(socket, session)
    finally:
        await session.close()
        writer.cancel()
        with contextlib.suppress(BaseException):
            await writer
        await socket.close(1000)


async def _read(socket: _Socket, session: LiveSession) -> None:
    while True:
        try:
            message = await socket.receive(socket.limits.idle_timeout)
        except TimeoutError:
            if session.speaking:
                continue
            seconds = socket.limits.idle_timeout
            await session.fail(None, IdleTimeout(f"nothing was said on this socket for {seconds:g} s"))
            await session.outbox.put(Closing(1000))
            await socket.closed.wait()
            return
        if message is None:
            return
        try:
            body = _decode(message)
        except TtsdError as exc:
            await session.fail(None, exc)
            continue
        await _take(session, socket.wire, body)


async def _take(session: LiveSession, wire: Wire, body: dict[str, Any]) -> None:
    try:
        commands = wire.commands(body)
    except TtsdError as exc:
        context = body.get("context_id") or body.get("context")
        await session.fail(context if isinstance(context, str) else None, exc)
        return
    for command in commands:
        await session.handle(command)


async def _write(socket: _Socket, session: LiveSession) -> None:
    while True:
        event = await session.outbox.get()
        if isinstance(event, Closing):
            await socket.close(event.code)
            return
        try:
            await socket.send(socket.wire.render(event))
        except (WebSocketDisconnect, RuntimeError, OSError):
            await socket.close(1000)
            return
        if isinstance(event, Failed) and event.fatal:
            await socket.close(POLICY_VIOLATION)
            return
        if socket.wire.closes_after(event):
            await socket.close(1000)
            return
