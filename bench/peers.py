"""The reference apps ``python -m bench hits`` measures ttsd against, each served by uvicorn and by
granian in the same run: what the HTTP server alone costs (a raw ASGI app answering a constant), what
the framework costs (a minimal FastAPI app: a pydantic body, a dict lookup, a JSON answer), and what
sending a file costs (Starlette's FileResponse of the same file ttsd serves, from
``BENCH_FILE``)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

_ANSWER = b'{"status":"done"}'


async def raw(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(_ANSWER)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _ANSWER})


class Body(BaseModel):
    text: str
    voice: str | None = None
    format: str = "wav"


minimal = FastAPI()
_CACHE = {("Thank you for calling. Please hold.", "mp3"): {"status": "done", "url": "http://x/a.mp3"}}


@minimal.post("/v1/synthesize")
async def synthesize(body: Body) -> dict[str, Any]:
    return _CACHE.get((body.text, body.format)) or {"status": "queued"}


async def _file(request: Request) -> FileResponse:
    return FileResponse(os.environ["BENCH_FILE"], media_type="audio/mpeg")


files = Starlette(routes=[Route("/file", _file)])
