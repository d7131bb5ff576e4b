"""A pool of engine worker processes: the bounded set of engine slots.

Each process loads the engines once and runs one job at a time, so synthesis never touches the
event loop and a crash takes down one job, not the service. A dead process is replaced; its job is
retried once on another process and fails cleanly if that one dies too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from ..config import Settings
from ..errors import EngineCrashed, EngineUnavailable, JobTimeout, job_error_from
from ..state.base import Stage
from .model import Job, JobOutcome, Piece
from .worker import worker_main

log = logging.getLogger("ttsd.pool")

StageCallback = Callable[[Stage, int], None]
# A piece of the master as it is made, or None once the master is complete.
AudioCallback = Callable[[Piece | None], None]
_MAX_ATTEMPTS = 2
_STOP_GRACE = 5.0


class _WorkerDied(Exception):
    pass


@dataclass(eq=False)
class _Worker:
    no: int
    process: BaseProcess
    conn: Connection
    ready: bool = False
    alive: bool = True
    task_id: str | None = None
    future: asyncio.Future[JobOutcome] | None = None
    on_stage: StageCallback | None = None
    on_audio: AudioCallback | None = None
    started_at: float = field(default_factory=time.monotonic)


class EnginePool:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ctx = multiprocessing.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: set[_Worker] = set()
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._stopping = False
        self._next_no = 0
        self.fatal: str | None = None
        self.restarts = 0
        self.busy = 0

    @property
    def size(self) -> int:
        return self._settings.engine_slots

    @property
    def ready(self) -> bool:
        return self.fatal is None and any(w.ready and w.alive for w in self._workers)

    @property
    def ready_workers(self) -> int:
        return sum(1 for w in self._workers if w.ready and w.alive)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.alive and w.process.pid is not None]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for _ in range(self.size):
            self._spawn()

    def _spawn(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        no = self._next_no
        self._next_no += 1
        process = self._ctx.Process(
            target=worker_main, args=(child_conn, self._settings, no), name=f"ttsd-engine-{no}", daemon=True
        )
        process.start()
        # Only the child holds its end now, so its death shows up here as EOF.
        child_conn.close()
        worker = _Worker(no=no, process=process, conn=parent_conn)
        self._workers.add(worker)
        threading.Thread(
            target=self._read, args=(worker,), name=f"ttsd-pool-reader-{no}", daemon=True
        ).start()

    def _read(self, worker: _Worker) -> None:
        """Blocking reads on a thread; every message is handled on the event loop."""
        assert self._loop is not None
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            self._loop.call_soon_threadsafe(self._on_message, worker, message)
        # EOF comes as soon as the process's descriptors close; reap it here, off the event loop,
        # so no zombie is left behind.
        worker.process.join(timeout=10)
        with contextlib.suppress(RuntimeError):  # loop closed during interpreter shutdown
            self._loop.call_soon_threadsafe(self._on_exit, worker)

    def _on_message(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            worker.ready = True
            self._idle.put_nowait(worker)
        elif kind == "fatal":
            _, code, text = message
            self.fatal = f"{code}: {text}"
            log.error("engine worker cannot start", extra={"worker": worker.no, "error": self.fatal})
        elif kind == "stage":
            _, task_id, stage, progress = message
            if worker.on_stage is not None and task_id == worker.task_id:
                worker.on_stage(Stage(stage), int(progress))
        elif kind == "audio":
            _, task_id, rate, data = message
            if worker.on_audio is not None and task_id == worker.task_id:
                worker.on_audio(Piece(np.frombuffer(data, dtype=np.int16), int(rate)))
        elif kind == "audio_end":
            if worker.on_audio is not None and message[1] == worker.task_id:
                worker.on_audio(None)
        elif kind in ("done", "failed"):
            future = worker.future
            worker.future = worker.on_stage = worker.on_audio = worker.task_id = None
            if future is not None and not future.done():
                if kind == "done":
                    future.set_result(message[2])
                else:
                    future.set_exception(job_error_from(message[2], message[3]))
            self._idle.put_nowait(worker)

    def _on_exit(self, worker: _Worker) -> None:
        worker.alive = False
        self._workers.discard(worker)
        with contextlib.suppress(OSError):
            worker.conn.close()
        if worker.future is not None and not worker.future.done():
            worker.future.set_exception(_WorkerDied(f"engine process {worker.no} died"))
        if self._stopping:
            return
        log.warning(
            "engine worker exited",
            extra={"worker": worker.no, "exitcode": worker.process.exitcode, "task_id": worker.task_id},
        )
        if not worker.ready and self.fatal is not None:
            # It could not load its engines; respawning would fail the same way. Its corpse wakes
            # the waiters so they fail instead of waiting for a slot that will never come.
            self._idle.put_nowait(worker)
            return
        self.restarts += 1
        self._spawn()

    async def _acquire(self) -> _Worker:
        while True:
            if self.fatal is not None:
                raise EngineUnavailable(f"engines failed to load ({self.fatal})")
            worker = await self._idle.get()
            if worker.alive:
                return worker
            if self.fatal is not None:
                self._idle.put_nowait(worker)  # pass the news on to the next waiter

    def cancel(self, task_id: str) -> bool:
        """Ask the process running ``task_id`` to stop after its current sentence."""
        for worker in self._workers:
            if worker.task_id == task_id and worker.alive:
                with contextlib.suppress(OSError):
                    worker.conn.send(("cancel", task_id))
                return True
        return False

    async def run(self, job: Job, on_stage: StageCallback, on_audio: AudioCallback) -> JobOutcome:
        """Run a job on the next free engine process (FIFO among waiters)."""
        delivered = 0  # pieces already passed on; a retry after a crash resumes after them
        seen = 0

        def forward(piece: Piece | None) -> None:
            nonlocal delivered, seen
            if piece is None:
                on_audio(None)
                return
            seen += 1
            if seen > delivered:
                delivered = seen
                on_audio(piece)

        for attempt in range(1, _MAX_ATTEMPTS + 1):
            seen = 0
            worker = await self._acquire()
            future: asyncio.Future[JobOutcome] = asyncio.get_running_loop().create_future()
            worker.future, worker.on_stage, worker.on_audio, worker.task_id = (
                future,
                on_stage,
                forward,
                job.task_id,
            )
            self.busy += 1
            try:
                started = time.monotonic()
                worker.conn.send(job)
                outcome = await asyncio.wait_for(asyncio.shield(future), self._settings.job_timeout)
                return dataclasses.replace(outcome, service_seconds=time.monotonic() - started)
            except (_WorkerDied, BrokenPipeError, OSError) as exc:
                log.warning("job lost its engine process", extra={"task_id": job.task_id, "attempt": attempt})
                if attempt == _MAX_ATTEMPTS:
                    raise EngineCrashed("the engine process crashed twice on this request") from exc
            except TimeoutError as exc:
                future.add_done_callback(lambda f: f.exception())  # the death that follows is expected
                worker.process.kill()  # a hung engine holds a slot forever otherwise
                raise JobTimeout(f"synthesis took longer than {self._settings.job_timeout:g} s") from exc
            finally:
                self.busy -= 1
        raise AssertionError("unreachable")

    async def stop(self) -> None:
        self._stopping = True
        for worker in list(self._workers):
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in list(self._workers):
            await asyncio.to_thread(worker.process.join, _STOP_GRACE)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=1)
