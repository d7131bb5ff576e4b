"""The ASGI app: ``create_app(settings)`` wires settings, backends, queue and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..backends import build_api_backends
from ..config import Settings
from ..engines import select
from ..logs import configure_logging
from ..service import TtsService
from ..voices import Catalogue
from . import errors
from .limits import BodyLimitMiddleware
from .routes import audio, health, speech, stream, synthesize, tasks, voices


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings)
    # Validated now, so a bad TTSD_ENGINES or TTSD_DEFAULT_VOICE fails at start, not per request.
    catalogue = Catalogue(select(settings.engines), settings.default_voice)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backends = build_api_backends(settings)
        app.state.service = TtsService(
            settings,
            catalogue,
            backends.index,
            backends.store,
            backends.queue,
            backends.board,
            backends.idempotency,
            backends.metrics,
        )
        await backends.queue.start()
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
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    errors.install(app, debug=settings.debug)
    for module in (synthesize, tasks, audio, speech, stream, voices, health):
        app.include_router(module.router)
    return app
