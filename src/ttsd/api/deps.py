"""Route dependencies."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from ..service import TtsService


def get_service(request: Request) -> TtsService:
    return cast(TtsService, request.app.state.service)


ServiceDep = Annotated[TtsService, Depends(get_service)]


def api_base(request: Request) -> str:
    # Behind a proxy, uvicorn's --proxy-headers makes this the public address.
    return str(request.base_url).rstrip("/")


def status_url(request: Request, task_id: str) -> str:
    return f"{api_base(request)}/v1/tasks/{task_id}"


def annotate(request: Request, **fields: object) -> None:
    """Add fields to this request's access-log event (ids and sizes, never the text)."""
    log_fields = request.scope.get("state", {}).get("log")
    if log_fields is not None:
        log_fields.update(fields)
