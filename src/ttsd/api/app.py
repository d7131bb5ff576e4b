"""The ASGI app: ``create_app(settings)`` wires settings, backends, queue and routes."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp

from .. import __version__
from ..backends import build_api_backends
from ..config import Settings
from ..links import Links
from ..logs import configure_logging
from ..metrics import Metrics
from ..pools import check_devices
from ..service import TtsService
from ..state.memory import MemoryRateLimiter
from ..tenants import Tenants
from ..voices import Catalogue
from . import errors
from .hot import HotPaths
from .limits import BodyLimitMiddleware
from .models import ErrorResponse
from .observability import Observability
from .routes import (
    audio,
    elevenlabs,
    health,
    lexicons,
    live,
    playground,
    speech,
    stream,
    synthesize,
    tasks,
    voices,
)
from .security import AuthenticatedCaller, is_loopback

log = logging.getLogger("ttsd.api")


def _openapi_with_our_errors(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI documents its own 422 body; ours is the same ``{"error": ...}`` as every error."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            components.update(
                ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")["$defs"]
            )
            components["ErrorResponse"] = {
                k: v
                for k, v in ErrorResponse.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                ).items()
                if k != "$defs"
            }
            error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if "422" in responses:
                        responses["422"] = {"description": "Invalid request", "content": error_content}
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


async def _require_key(caller: AuthenticatedCaller) -> None:
    """Router-wide: the key check (the caller itself is used where rate limits apply)."""


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The service's ASGI app: the FastAPI app (``.api``) inside the layers every request passes,
    outermost first: metrics and the access log, the body limit, and the hot paths."""
    settings = settings or Settings()
    configure_logging(settings)
    # Validated now, so a bad TTSD_ENGINES or TTSD_DEFAULT_VOICE fails at start, not per request.
    catalogue = Catalogue.of(settings)
    # Now too: distributed mode without its shared secret does not start.
    links = Links.of(settings)
    tenants = Tenants.parse(settings.api_keys)
    if settings.queue == "inprocess":  # in distributed mode, workers place their own pools
        kinds = {name: spec.device_kinds for name, spec in catalogue.specs.items()}
        check_devices(settings.pool_layout, kinds)
    if not tenants and not is_loopback(settings.host):
        log.warning(
            "SECURITY: serving on %s with no API keys: anyone who can reach this address can use it. "
            "Set TTSD_API_KEYS.",
            settings.host,
        )

    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backends = build_api_backends(settings, metrics, links)
        app.state.service = TtsService(
            settings,
            catalogue,
            backends.index,
            backends.store,
            backends.queue,
            backends.board,
            backends.idempotency,
            backends.limiter,
            backends.metrics,
            backends.recent,
            links,
            tenants,
        )
        # Live messages are counted per key in this process: a token costs no round trip.
        app.state.live_messages = MemoryRateLimiter()
        await backends.queue.start()
        # What exists now lives as long as the process: leave it out of the collector's scans, or
        # every full collection pauses the event loop for tens of milliseconds under load.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await backends.queue.stop()
            backends.index.close()

    app = FastAPI(
        title="ttsd",
        version=__version__,
        description="Text-to-speech for high concurrency: cache, single flight, bounded engine pool.",
        lifespan=lifespan,
        debug=False,
    )
    errors.install(app, debug=settings.debug)
    # Keys guard the API; audio links (capability URLs), health and metrics stay open.
    keyed = [Depends(_require_key)]
    for module in (synthesize, tasks, speech, voices, lexicons):
        app.include_router(module.router, dependencies=keyed)
    for module in (
        audio,
        stream,
        live,
        elevenlabs,
        health,
        playground,
    ):  # WebSockets check their keys themselves
        app.include_router(module.router)
    app.openapi = _openapi_with_our_errors(app)  # type: ignore[method-assign]
    # These wrap FastAPI rather than sit in its middleware stack, so that a hot request pays for
    # nothing it does not use (FastAPI's own layers cost more than answering a cache hit).
    inner: ASGIApp = HotPaths(app, api=app) if settings.hot_paths else app
    return Observability(BodyLimitMiddleware(inner, max_bytes=settings.max_body_bytes), metrics.registry)
