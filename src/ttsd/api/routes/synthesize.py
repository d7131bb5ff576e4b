from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.types import Scope

from ...prepare import SynthesisRequest
from ...service import Hit, TtsService
from ...state.base import Mark
from ..deps import ServiceDep, annotate, api_base, ssml_ignored, status_url
from ..models import Done, ErrorResponse, QueuedResponse, SynthesizeBody
from ..security import AdmittedCaller, Caller

router = APIRouter(tags=["synthesis"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 429, 503)
}


def _done_body(key: str, fmt: str, url: str, duration: float) -> str:
    done = Done(key=key, format=fmt, url=url, duration=round(duration, 3))
    return done.model_dump_json(exclude={"task_id", "sentences", "sentences_reused"})


@functools.cache
def _done(size: int) -> Callable[[str, str, str, float], str]:
    """A hit's body, the same for every repeat of it: made once, for as many as TTSD_HOT_ENTRIES
    texts (one memory per size: the settings are fixed)."""
    return functools.lru_cache(maxsize=size)(_done_body)


async def answer(
    scope: Scope,
    service: TtsService,
    wanted: SynthesisRequest,
    caller: Caller,
    *,
    redirect: bool,
    idempotency_key: str | None,
) -> Response:
    """The route's work once the request is parsed and admitted: shared with the hot path."""
    wanted = service.scoped(wanted, caller.tenant_name)
    result = await service.synthesize(wanted, idempotency_key, owner=caller.tenant_name)
    base = api_base(scope)
    ignored = ssml_ignored(service, wanted)
    if isinstance(result, Hit):
        entry = result.entry
        annotate(scope, key=entry.key, cache="hit", text_length=len(wanted.text))
        url = service.audio_url(entry.key, entry.fmt, base, entry.object_name)
        if redirect:
            return RedirectResponse(url, status_code=302)
        if result.sentences is not None or ignored or result.marks:  # assembled just now, or SSML
            if result.sentences is not None:
                annotate(scope, cache="assembled")
            done = Done(
                key=entry.key,
                format=entry.fmt,
                url=url,
                duration=round(entry.duration, 3),
                task_id=result.task_id,
                sentences=result.sentences,
                sentences_reused=result.sentences,
                ssml_ignored=ignored,
                marks=[Mark(name=name, seconds=seconds) for name, seconds in result.marks or ()] or None,
            )
            return Response(done.model_dump_json(), media_type="application/json")
        body_json = _done(service.settings.hot_entries)(entry.key, entry.fmt, url, entry.duration)
        return Response(body_json, media_type="application/json")
    status = result.status
    annotate(
        scope,
        key=status.key,
        task_id=status.task_id,
        cache="merged" if result.merged else "miss",
        text_length=len(wanted.text),
    )
    queued = QueuedResponse(
        status=status.status,
        task_id=status.task_id,
        status_url=status_url(base, status.task_id),
        key=status.key,
        merged=result.merged,
        sentences=result.sentences,
        sentences_reused=result.sentences_reused,
        ssml_ignored=ignored,
    )
    return JSONResponse(
        queued.model_dump(mode="json"), status_code=202, headers={"Location": queued.status_url}
    )


@router.post(
    "/v1/synthesize",
    responses={
        200: {"model": Done},
        202: {"model": QueuedResponse},
        302: {"description": "Redirect to the audio"},
        **_ERRORS,
    },
    response_model=None,
)
async def synthesize(
    body: SynthesizeBody,
    request: Request,
    service: ServiceDep,
    caller: AdmittedCaller,
    redirect: bool = False,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    """A cache hit answers 200 with the audio URL (or 302 to it with ``?redirect=true``); a miss
    answers 202 with the task to poll. Identical requests in flight share one task."""
    return await answer(
        request.scope, service, body.to_request(), caller, redirect=redirect, idempotency_key=idempotency_key
    )
