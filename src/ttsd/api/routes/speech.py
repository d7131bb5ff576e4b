from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ...service import SynthesisRequest
from ..deps import ServiceDep
from ..models import ErrorResponse, SpeechBody

router = APIRouter(tags=["openai"])


@router.post(
    "/v1/audio/speech",
    response_class=Response,
    responses={
        200: {"content": {"audio/*": {}}},
        **{c: {"model": ErrorResponse} for c in (400, 413, 422, 503)},
    },
)
async def speech(body: SpeechBody, service: ServiceDep) -> Response:
    """OpenAI-compatible: returns the audio bytes. ``model`` is accepted and ignored; the voice picks
    the engine."""
    entry = await service.synthesize_and_wait(
        SynthesisRequest(text=body.input, voice=body.voice, format=body.response_format, speed=body.speed)
    )
    data = service.store.get(entry.object_name)
    return Response(
        data,
        media_type=entry.content_type,
        headers={"X-Sample-Rate": str(entry.sample_rate), "ETag": f'"{entry.etag}"'},
    )
