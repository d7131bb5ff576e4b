"""Route dependencies, and the request facts that routes and the hot paths (``hot.py``) share."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from starlette.types import Scope

from ..prepare import SynthesisRequest
from ..service import TtsService
from ..ssml import is_ssml

# Public base URLs by what they are computed from; bounded, since the Host header is the client's.
_BASES: dict[tuple[object, ...], str] = {}
_BASES_MAX = 256


async def get_service(request: Request) -> TtsService:  # async: no thread-pool hop
    return cast(TtsService, request.app.state.service)


ServiceDep = Annotated[TtsService, Depends(get_service)]


def api_base(scope: Scope) -> str:
    """The public base URL of this API as the client sees it (behind a proxy, uvicorn's
    --proxy-headers makes it the public address). Starlette computes it; the result is remembered,
    since it only depends on the scheme, the Host header, the socket and the root path."""
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    source = (
        scope.get("scheme"),
        host,
        scope.get("server"),
        scope.get("root_path"),
        scope.get("app_root_path"),
    )
    base = _BASES.get(source)
    if base is None:
        base = str(Request(scope).base_url).rstrip("/")
        if len(_BASES) >= _BASES_MAX:
            _BASES.clear()
        _BASES[source] = base
    return base


def status_url(base: str, task_id: str) -> str:
    return f"{base}/v1/tasks/{task_id}"


def annotate(scope: Scope, **fields: object) -> None:
    """Add fields to this request's access-log event (ids and sizes, never the text)."""
    log_fields = scope.get("state", {}).get("log")
    if log_fields is not None:
        log_fields.update(fields)


def ssml_ignored(service: TtsService, request: SynthesisRequest) -> list[str] | None:
    """The elements an SSML request's document had that ttsd speaks only the content of (the same
    on every route, said in each response); None for plain text. A repeat reads it from the job
    the first one prepared."""
    if request.text_type == "text" or (request.text_type is None and not is_ssml(request.text)):
        return None
    layout = service.prepare(request).layout
    return list(layout.ignored) if layout is not None and layout.ignored else None
