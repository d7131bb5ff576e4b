"""Route dependencies."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from ..service import TtsService


def get_service(request: Request) -> TtsService:
    return cast(TtsService, request.app.state.service)


ServiceDep = Annotated[TtsService, Depends(get_service)]


def public_base(request: Request, service: TtsService) -> str:
    base = service.settings.public_base_url or str(request.base_url)
    return base.rstrip("/")


def audio_url(request: Request, service: TtsService, audio_id: str) -> str:
    return f"{public_base(request, service)}/v1/audio/{audio_id}"


def status_url(request: Request, service: TtsService, task_id: str) -> str:
    return f"{public_base(request, service)}/v1/tasks/{task_id}"
