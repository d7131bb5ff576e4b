from __future__ import annotations

from fastapi import APIRouter, Request

from ..deps import ServiceDep, api_base
from ..models import ErrorResponse, TaskResponse

router = APIRouter(tags=["tasks"])


@router.get("/v1/tasks/{task_id}", response_model=TaskResponse, responses={404: {"model": ErrorResponse}})
async def get_task(task_id: str, request: Request, service: ServiceDep) -> TaskResponse:
    status = service.task(task_id)
    return TaskResponse(
        **status.model_dump(exclude={"audio_id"}),
        url=service.audio_url(status.key, status.format, api_base(request)) if status.audio_id else None,
    )
