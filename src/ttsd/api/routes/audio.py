from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.types import Scope

from ...errors import AudioNotFound
from ...service import TtsService
from ...state.base import CacheEntry
from ...store.base import LocalFile, Redirect
from ..deps import ServiceDep
from ..models import ErrorResponse

router = APIRouter(tags=["audio"])


def local_file(
    service: TtsService,
    entry: CacheEntry,
    path: os.PathLike[str],
    headers: dict[str, str],
    *,
    attachment_name: bool = True,
) -> Response:
    """A cached file sent from disk: zero-copy where the server implements ASGI ``pathsend``.
    The stat is done here (a local syscall) rather than in a thread, as FileResponse would."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        service.forget(entry)
        raise AudioNotFound(f"no audio {entry.key}.{entry.fmt} (evicted)") from None
    suffix = "raw" if entry.fmt == "pcm" else entry.fmt
    return FileResponse(
        path,
        media_type=entry.content_type,
        headers=headers,
        filename=f"{entry.key[:16]}.{suffix}" if attachment_name else None,
        content_disposition_type="inline",
        stat_result=stat,
    )


async def answer(scope: Scope, service: TtsService, audio_id: str) -> Response:
    """The route's work: shared with the hot path."""
    entry, location = await service.audio(audio_id)
    etag = f'"{entry.etag}"'
    headers = {
        "ETag": etag,
        "Cache-Control": f"public, max-age={service.settings.cache_ttl}, immutable",
        "X-Sample-Rate": str(entry.sample_rate),
    }
    if_none_match = Headers(scope=scope).get("if-none-match")
    if if_none_match and etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    match location:
        case Redirect(url=url):
            return RedirectResponse(url, status_code=302, headers=headers)
        case LocalFile(path=path):
            return local_file(service, entry, path, headers)


@router.get(
    "/v1/audio/{audio_id}",
    responses={
        200: {"content": {"audio/*": {}}},
        302: {"description": "Redirect to object storage"},
        304: {"description": "Not modified"},
        404: {"model": ErrorResponse},
    },
    response_class=Response,
)
async def get_audio(audio_id: str, request: Request, service: ServiceDep) -> Response:
    """One encoded file. Content-addressed, so it is cacheable forever (strong ETag, immutable)."""
    return await answer(request.scope, service, audio_id)


router.add_api_route("/v1/audio/{audio_id}", get_audio, methods=["HEAD"], include_in_schema=False)
