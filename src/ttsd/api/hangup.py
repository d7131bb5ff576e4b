"""A caller that hangs up before its answer is ready.

A streaming request sends its headers with its first audio, which may wait for an engine slot. Its
body is read by then, so the next thing the server can hear from it is its disconnect: listening for
that while the stream opens lets a caller who barges in free the slot before a sentence is spoken
for nobody (once audio flows, the response notices a lost client by itself). A WebSocket's next
message is read the same way, and kept when it is a request rather than the close."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

T = TypeVar("T")

# The status access logs give a request whose client left first (nginx's; never sent).
CLIENT_CLOSED = 499


async def opened_unless(
    opening: Coroutine[Any, Any, T],
    watch: Callable[[], asyncio.Future[Any]],
    gone: Callable[[asyncio.Future[Any]], bool],
) -> T | None:
    """``opening``'s result, or None when what ``watch`` starts completes first and ``gone`` reads
    it as the client leaving: ``opening`` is then cancelled, and its own cleanup (letting go of the
    job) has run when this returns. A stream that opens in its first step (a hit served from
    memory) is not watched: the hot path pays one task for this, not two and a wait."""
    task = asyncio.ensure_future(opening)
    try:
        await asyncio.sleep(0)
        if not task.done():
            watching = watch()
            await asyncio.wait((task, watching), return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and gone(watching):
                return None
        return await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))


async def _until_gone(receive: Receive) -> None:
    with contextlib.suppress(Exception):  # a server that cannot say counts as gone too
        while (await receive())["type"] != "http.disconnect":
            pass


async def unless_gone(receive: Receive, opening: Coroutine[Any, Any, T]) -> T | None:
    """``opening``'s result, or None when the HTTP client hangs up first."""
    watching: list[asyncio.Future[None]] = []

    def watch() -> asyncio.Future[None]:
        watching.append(asyncio.ensure_future(_until_gone(receive)))
        return watching[-1]

    try:
        return await opened_unless(opening, watch, lambda _: True)
    finally:
        for watcher in watching:
            watcher.cancel()
