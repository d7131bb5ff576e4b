from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from ...errors import AudioNotFound
from ...store.base import LocalFile, Redirect
from ..deps import ServiceDep
from ..models import ErrorResponse

router = APIRouter(tags=["audio"])


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
    entry, location = service.audio(audio_id)
    etag = f'"{entry.etag}"'
    headers = {
        "ETag": etag,
        "Cache-Control": f"public, max-age={service.settings.cache_ttl}, immutable",
        "X-Sample-Rate": str(entry.sample_rate),
    }
    if etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    match location:
        case Redirect(url=url):
            return RedirectResponse(url, status_code=302, headers=headers)
        case LocalFile(path=path):
            if not path.is_file():
                service.forget(entry)
                raise AudioNotFound(f"no audio {audio_id!r} (evicted)")
            suffix = "raw" if entry.fmt == "pcm" else entry.fmt
            return FileResponse(
                path,
                media_type=entry.content_type,
                headers=headers,
                filename=f"{entry.key[:16]}.{suffix}",
                content_disposition_type="inline",
            )


router.add_api_route("/v1/audio/{audio_id}", get_audio, methods=["HEAD"], include_in_schema=False)
