"""Redis commands issued in the same turn of the event loop, sent in one pipeline.

Under load an API process has dozens of requests in flight, and each needs a Redis round trip (its
rate-limit token, a task poll, an index read the memory could not answer). Sent one by one, the
client's per-command work and the round trips cost more than the rest of the request; collected
while the loop runs the other ready callbacks and sent together, one round trip and one pipeline
serve them all. Light load loses nothing: a lone command is sent on the next turn of the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.client import Pipeline

Command = Callable[[Pipeline], object]


class AutoPipeline:
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._pending: list[tuple[Command, asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, command: Command) -> Any:
        """Queue ``command`` (a function adding one command to a pipeline); its reply, or the
        error Redis or the connection raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((command, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for command, _ in batch:
            command(pipe)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except (redis.RedisError, OSError) as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its request was cancelled (the client left)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
