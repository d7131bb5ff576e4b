from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Scope

from ...errors import TaskNotFound
from ...service import TtsService
from ...state.base import TaskStatus
from ..deps import ServiceDep, api_base
from ..models import ErrorResponse, TaskResponse

router = APIRouter(tags=["tasks"])

_POLL_SECONDS = 0.05
_KEEPALIVE_SECONDS = 15.0


async def _response(status: TaskStatus, base: str, service: TtsService) -> TaskResponse:
    return TaskResponse(**status.model_dump(exclude={"audio_id"}), url=await service.task_url(status, base))


async def answer(scope: Scope, service: TtsService, task_id: str) -> JSONResponse:
    """The route's work: shared with the hot path."""
    status = await service.task(task_id)
    return JSONResponse((await _response(status, api_base(scope), service)).model_dump(mode="json"))


@router.get("/v1/tasks/{task_id}", response_model=TaskResponse, responses={404: {"model": ErrorResponse}})
async def get_task(task_id: str, request: Request, service: ServiceDep) -> JSONResponse:
    return await answer(request.scope, service, task_id)


@router.get(
    "/v1/tasks/{task_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 404: {"model": ErrorResponse}},
)
async def task_events(task_id: str, request: Request, service: ServiceDep) -> StreamingResponse:
    """Server-Sent Events: a ``status`` event (the task as JSON) at every change of stage or
    progress, until it is done or failed."""
    first = await service.task(task_id)
    base = api_base(request.scope)

    async def events() -> AsyncIterator[str]:
        status: TaskStatus | None = first
        last: tuple[object, ...] | None = None
        quiet = 0.0
        while status is not None:
            marker = (status.status, status.stage, status.progress)
            if marker != last:
                last, quiet = marker, 0.0
                body = await _response(status, base, service)
                yield f"event: status\ndata: {body.model_dump_json()}\n\n"
                if status.finished:
                    return
            elif quiet >= _KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(_POLL_SECONDS)
            quiet += _POLL_SECONDS
            try:
                status = await service.task(task_id)
            except TaskNotFound:
                status = None
        expired = json.dumps({"code": "task_not_found", "message": "the task expired"})
        yield f"event: error\ndata: {expired}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
