from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..deps import ServiceDep
from ..security import AuthenticatedCaller

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: answers as long as the event loop runs, whatever the engines are doing."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(service: ServiceDep) -> dict[str, Any]:
    """Readiness: at least one engine loaded and warmed (``engines`` lists those that are, and
    ``unavailable`` says why the others are not: their requests get 503); state and storage answer."""
    service.check_ready()
    states = service.engine_states()
    return {
        "status": "ready",
        "engines": [engine for engine, state in states.items() if state == "ready"],
        "unavailable": {engine: state for engine, state in states.items() if state != "ready"},
    }


@router.get("/v1/stats")
async def stats(service: ServiceDep, caller: AuthenticatedCaller) -> dict[str, Any]:
    """A JSON digest of the metrics (cumulative counters and current gauges), for dashboards.
    Needs a key when keys are set: it names the tenants."""
    return service.metrics.snapshot()


@router.get("/metrics", response_class=Response)
async def metrics(service: ServiceDep) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
