from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope

from ...errors import TtsdError
from ...prepare import SynthesisRequest
from ...service import TtsService
from ...store.base import LocalFile
from ...streaming import AudioStream
from ..deps import ServiceDep, annotate, ssml_ignored
from ..hangup import CLIENT_CLOSED, unless_gone
from ..models import ErrorResponse, SpeechBody
from ..security import AdmittedCaller, Caller
from .audio import local_file

router = APIRouter(tags=["openai"])


def stream_headers(stream: AudioStream) -> dict[str, str]:
    return {
        "X-Sample-Rate": str(stream.sample_rate),
        "X-Cache": "hit" if stream.cached else "merged" if stream.merged else "miss",
        "X-Task-Id": stream.task_id,
        "Access-Control-Expose-Headers": "X-Cache, X-Task-Id, X-Sample-Rate",
    }


async def sse_events(stream: AudioStream) -> AsyncIterator[str]:
    """OpenAI's speech events: base64 audio deltas, then a done event (or an error event)."""
    try:
        async for chunk in stream.chunks:
            delta = {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}
            yield f"data: {json.dumps(delta)}\n\n"
    except TtsdError as exc:
        yield f"data: {json.dumps({'type': 'error', 'error': exc.to_dict()})}\n\n"
        return
    yield f"data: {json.dumps({'type': 'speech.audio.done', 'key': stream.key})}\n\n"


async def answer(
    scope: Scope,
    receive: Receive,
    service: TtsService,
    wanted: SynthesisRequest,
    caller: Caller,
    stream_format: str,
) -> Response:
    """The route's work once the request is parsed and admitted: shared with the hot path."""
    stream = await unless_gone(receive, service.stream(service.scoped(wanted, caller.tenant_name)))
    if stream is None:
        annotate(scope, text_length=len(wanted.text))
        return Response(status_code=CLIENT_CLOSED)
    headers = stream_headers(stream)
    if ignored := ssml_ignored(service, wanted):
        headers["X-SSML-Ignored"] = ", ".join(ignored)
        headers["Access-Control-Expose-Headers"] += ", X-SSML-Ignored"
    annotate(
        scope,
        key=stream.key,
        task_id=stream.task_id,
        cache="hit" if stream.cached else "merged" if stream.merged else "miss",
        text_length=len(wanted.text),
    )
    if stream_format == "sse":
        return StreamingResponse(sse_events(stream), media_type="text/event-stream", headers=headers)
    if stream.entry is not None:
        # A hit is a whole file: sent with its length, from disk where it is local.
        location = service.store.locate(stream.entry.object_name)
        if isinstance(location, LocalFile):
            return local_file(service, stream.entry, location.path, headers, attachment_name=False)
        data = await service.read(stream.entry)
        return Response(data, media_type=stream.format.media_type, headers=headers)
    return StreamingResponse(stream.chunks, media_type=stream.format.media_type, headers=headers)


@router.post(
    "/v1/audio/speech",
    response_class=Response,
    responses={
        200: {"content": {"audio/*": {}, "text/event-stream": {}}},
        **{c: {"model": ErrorResponse} for c in (400, 401, 413, 422, 429, 503)},
    },
)
async def speech(body: SpeechBody, request: Request, service: ServiceDep, caller: AdmittedCaller) -> Response:
    """OpenAI-compatible. The audio is streamed sentence by sentence as it is synthesized (a cache
    hit is sent whole at once). ``model`` is accepted and ignored; the voice picks the engine."""
    return await answer(
        request.scope, request.receive, service, body.to_request(), caller, body.stream_format
    )
