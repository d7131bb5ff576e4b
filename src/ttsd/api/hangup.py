"""A caller that hangs up before its answer is ready.

A streaming request sends its headers with its first audio, which may wait for an engine slot. Its
body is read by then, so the next thing the server can hear from it is its disconnect: listening for
that while the stream opens lets a caller who barges in free the slot before a sentence is spoken
for nobody (once audio flows, the response notices a lost client by itself)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

T = TypeVar("T")

# The status access logs give a request whose client left first (nginx's; never sent).
CLIENT_CLOSED = 499


async def _until_gone(receive: Receive) -> None:
    with contextlib.suppress(Exception):  # a server that cannot say counts as gone too
        while (await receive())["type"] != "http.disconnect":
            pass


async def unless_gone(receive: Receive, opening: Coroutine[Any, Any, T]) -> T | None:
    """``opening``'s result, or None when the client hangs up first: ``opening`` is then
    cancelled, and its own cleanup (letting go of the job) has run when this returns."""
    task = asyncio.ensure_future(opening)
    gone = asyncio.ensure_future(_until_gone(receive))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
    if task.cancelled():
        return None
    return task.result()
