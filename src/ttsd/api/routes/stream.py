from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette.types import Message

from ...errors import InvalidRequest, MalformedRequest, TtsdError
from ...prepare import SynthesisRequest
from ...service import TtsService
from ..deps import ssml_ignored
from ..hangup import opened_unless
from ..security import admit, authenticate

router = APIRouter(tags=["streaming"])

_MAX_MESSAGE = 64 * 1024


async def _error(ws: WebSocket, exc: TtsdError) -> None:
    await ws.send_json({"event": "error", "error": exc.to_dict()})


def _closed(ahead: asyncio.Future[Message]) -> bool:
    """The message read ahead is the socket's close (or reading it failed)."""
    if ahead.cancelled() or ahead.exception() is not None:
        return True
    return bool(ahead.result()["type"] == "websocket.disconnect")


async def _send(ws: WebSocket, chunks: AsyncIterator[bytes]) -> int:
    """Send a stream's audio; the bytes sent."""
    sent = 0
    async for chunk in chunks:
        await ws.send_bytes(chunk)
        sent += len(chunk)
    return sent


def _parse(message: Mapping[str, Any]) -> SynthesisRequest:
    from ..models import StreamRequest

    text = message.get("text")
    if text is None:
        raise MalformedRequest("send each request as a JSON text message")
    if len(text) > _MAX_MESSAGE:
        raise MalformedRequest(f"messages are limited to {_MAX_MESSAGE} characters")
    try:
        body = StreamRequest.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors()[:5]
        )
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise MalformedRequest("the message is not valid JSON") from exc
        raise InvalidRequest(problems) from exc
    return body.to_request()


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    """Send JSON requests ``{text, voice?, language?, format? (pcm), speed?, seed?}``, one after
    another on one socket; each is answered with binary audio chunks, then ``{"event": "done"}``.
    Errors come as ``{"event": "error"}`` and the socket stays open."""
    service: TtsService = ws.app.state.service
    await ws.accept()
    address = ws.client.host if ws.client else None
    try:
        caller = await authenticate(service, ws.headers, ws.query_params, address)
    except TtsdError as exc:
        await _error(ws, exc)
        await ws.close(code=1008)  # policy violation: browsers cannot set headers, so ?api_key= works too
        return
    # The socket's next message, read while a stream opens (its first audio may wait for a slot):
    # a hang-up then lets go of the job at once; a request sent meanwhile waits its turn here.
    ahead: asyncio.Task[Message] | None = None
    try:
        while True:
            try:
                message = await (ahead if ahead is not None else ws.receive())
            except WebSocketDisconnect:
                return
            ahead = None
            if message["type"] == "websocket.disconnect":
                return
            try:
                request = _parse(message)
                await admit(service, caller)
                ahead = asyncio.ensure_future(ws.receive())
                opening = service.stream(service.scoped(request, caller.tenant_name))
                opened = await opened_unless(opening, lambda: ahead, _closed)  # noqa: B023 (used at once)
            except TtsdError as exc:
                await _error(ws, exc)
                continue
            if opened is None:
                return
            # The read ahead goes on while audio flows: a close heard between two chunks lets go of
            # the job then, not when the next sentence is ready to send (a slow engine's sentence,
            # or a slot the rest of the text waits for).
            sending = asyncio.ensure_future(_send(ws, opened.chunks))
            try:
                await asyncio.wait((sending, ahead), return_when=asyncio.FIRST_COMPLETED)
                if not sending.done() and _closed(ahead):
                    return
                sent = await sending
            except TtsdError as exc:
                await _error(ws, exc)
                continue
            except (WebSocketDisconnect, RuntimeError, OSError):
                return
            finally:
                if not sending.done():
                    sending.cancel()
                    await asyncio.wait((sending,))
                with contextlib.suppress(Exception):
                    await opened.chunks.aclose()
            await ws.send_text(
                json.dumps(
                    {
                        "event": "done",
                        "key": opened.key,
                        "format": opened.format.name,
                        "sample_rate": opened.sample_rate,
                        "cached": opened.cached,
                        "bytes": sent,
                        **({"ssml_ignored": ignored} if (ignored := ssml_ignored(service, request)) else {}),
                    }
                )
            )
    finally:
        if ahead is not None:
            ahead.cancel()
