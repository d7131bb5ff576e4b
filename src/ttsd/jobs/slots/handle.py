"""The parent's handle on one engine process: its pipe, its state, the batches it holds."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from ...config import Settings
from ...pools import PoolSpec
from .process import engine_process_main


class WorkerDied(Exception):
    pass


@dataclass(eq=False)
class Assignment:
    request_id: str  # the caller's (a task id: the same again when the task is asked for again)
    future: asyncio.Future[float]  # the slot seconds the engine process measured
    on_sentence: Callable[[int, Any, int, float], None]


@dataclass(eq=False)
class EngineProcess:
    no: int
    slot: int  # which of the pool's slots (its device follows from it); a replacement keeps it
    process: BaseProcess
    conn: Connection
    ready: bool = False
    alive: bool = True
    # Batches sent to this process by wire id (unique per attempt, so a late answer or cancel of
    # an abandoned batch never touches a newer one of the same task), in the order it speaks them:
    # the first is being spoken, the next waits in its pipe (``_DEPTH``).
    assigned: dict[str, Assignment] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)

    def listen(
        self,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[EngineProcess, Any], None],
        on_exit: Callable[[EngineProcess], None],
    ) -> None:
        """Its messages, read on a thread of their own, each handled on ``loop``; then its exit."""

        def read() -> None:
            while True:
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    break
                loop.call_soon_threadsafe(on_message, self, message)
            # EOF comes as soon as the process's descriptors close; reap it here, off the event
            # loop, so no zombie is left behind.
            self.process.join(timeout=10)
            with contextlib.suppress(RuntimeError):  # loop closed during interpreter shutdown
                loop.call_soon_threadsafe(on_exit, self)

        threading.Thread(target=read, name=f"ttsd-pool-reader-{self.no}", daemon=True).start()


def spawn(ctx: SpawnContext, settings: Settings, spec: PoolSpec, slot: int, no: int) -> EngineProcess:
    parent_conn, child_conn = ctx.Pipe(duplex=True)
    process = ctx.Process(
        target=engine_process_main,
        args=(child_conn, settings, spec, slot, no),
        name=f"ttsd-engine-{spec.name}-{no}",
        daemon=True,
    )
    process.start()
    # Only the child holds its end now, so its death shows up here as EOF.
    child_conn.close()
    return EngineProcess(no=no, slot=slot, process=process, conn=parent_conn)
