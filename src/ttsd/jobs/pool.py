"""A pool of engine processes: the bounded set of engine slots.

Each process loads the engines once and speaks one batch of sentences at a time, so synthesis never
touches the event loop and a crash takes down one batch, not the service. A slot is held only while
its engine speaks: results stream back sentence by sentence, and everything else a job does happens
in the post-processing stage (``jobs.synth``). A dead process is replaced; its batch is retried
once, from the first sentence not yet returned, on another process, and fails cleanly if that one
dies too.
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
from .model import SentenceBatch
from .worker import worker_main

log = logging.getLogger("ttsd.pool")

# (index in the text, float32 samples, sample rate): one sentence as the engine spoke it.
SentenceCallback = Callable[[int, "np.ndarray[Any, np.dtype[np.float32]]", int], None]
_MAX_ATTEMPTS = 2
_STOP_GRACE = 5.0


class _WorkerDied(Exception):
    pass


@dataclass(frozen=True)
class BatchResult:
    slot_seconds: float  # wall time the batch held its slot
    synthesis_seconds: float  # of which the engine was speaking


@dataclass(eq=False)
class _Worker:
    no: int
    process: BaseProcess
    conn: Connection
    ready: bool = False
    alive: bool = True
    request_id: str | None = None
    future: asyncio.Future[None] | None = None
    on_sentence: Callable[[int, Any, int, float], None] | None = None
    started_at: float = field(default_factory=time.monotonic)


# Told of every batch's slot time when it ends, finished or not: (batch, held seconds, engine seconds).
BatchHook = Callable[[SentenceBatch, float, float], None]


class EnginePool:
    def __init__(
        self,
        settings: Settings,
        on_batch: BatchHook | None = None,
    ) -> None:
        self._settings = settings
        self._on_batch = on_batch
        self._ctx = multiprocessing.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: set[_Worker] = set()
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._stopping = False
        self._next_no = 0
        self.fatal: str | None = None
        self.restarts = 0
        self.busy = 0
        self.waiting = 0  # batches waiting for a free slot

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
        elif kind == "sentence":
            _, request_id, index, rate, data, seconds = message
            if request_id == worker.request_id and worker.on_sentence is not None:
                worker.on_sentence(int(index), np.frombuffer(data, dtype=np.float32), int(rate), seconds)
        elif kind in ("done", "failed"):
            future = worker.future
            worker.future = worker.on_sentence = worker.request_id = None
            if future is not None and not future.done():
                if kind == "done":
                    future.set_result(None)
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
            extra={"worker": worker.no, "exitcode": worker.process.exitcode, "request_id": worker.request_id},
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

    def cancel(self, request_id: str) -> bool:
        """Ask the process speaking ``request_id`` to stop after its current sentence."""
        for worker in self._workers:
            if worker.request_id == request_id and worker.alive:
                with contextlib.suppress(OSError):
                    worker.conn.send(("cancel", request_id))
                return True
        return False

    async def synthesize(
        self,
        batch: SentenceBatch,
        on_sentence: SentenceCallback,
        on_start: Callable[[], None] | None = None,
    ) -> BatchResult:
        """Speak a batch on the next free slot (FIFO among waiters); ``on_sentence`` sees each
        sentence as it is made, ``on_start`` the moment a slot is taken."""
        returned: set[int] = set()
        spoken = 0.0  # engine seconds of the current attempt

        def forward(index: int, samples: Any, rate: int, seconds: float) -> None:
            nonlocal spoken
            spoken += seconds
            if index not in returned:  # a retry after a crash repeats nothing already passed on
                returned.add(index)
                on_sentence(index, samples, rate)

        slot_seconds = synthesis_seconds = 0.0
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            todo = [(i, t) for i, t in zip(batch.indices, batch.sentences, strict=True) if i not in returned]
            request = dataclasses.replace(
                batch, indices=tuple(i for i, _ in todo), sentences=tuple(t for _, t in todo)
            )
            self.waiting += 1
            try:
                worker = await self._acquire()
            finally:
                self.waiting -= 1
            if on_start is not None and attempt == 1:
                on_start()
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            worker.future, worker.on_sentence, worker.request_id = future, forward, batch.request_id
            spoken = 0.0
            self.busy += 1
            started = time.monotonic()
            finished = False
            try:
                worker.conn.send(request)
                await asyncio.wait_for(asyncio.shield(future), self._settings.job_timeout)
                finished = True
            except (_WorkerDied, BrokenPipeError, OSError) as exc:
                log.warning("batch lost its engine process", extra={"request_id": batch.request_id})
                if attempt == _MAX_ATTEMPTS:
                    raise EngineCrashed("the engine process crashed twice on this request") from exc
            except TimeoutError as exc:
                future.add_done_callback(lambda f: f.exception())  # the death that follows is expected
                worker.process.kill()  # a hung engine holds a slot forever otherwise
                raise JobTimeout(f"synthesis took longer than {self._settings.job_timeout:g} s") from exc
            except asyncio.CancelledError:
                # The job was abandoned: stop the engine after its sentence; the slot comes back
                # when the process answers.
                self.cancel(batch.request_id)
                raise
            finally:
                self.busy -= 1
                held = time.monotonic() - started
                slot_seconds += held
                synthesis_seconds += spoken
                if self._on_batch is not None:
                    self._on_batch(batch, held, spoken)
            if finished:
                return BatchResult(slot_seconds, synthesis_seconds)
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
