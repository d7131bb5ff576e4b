"""A pool of engine processes: the bounded set of engine slots of one ``PoolSpec``.

Each process loads its pool's engines once, on its slot's device, and speaks one batch of sentences
at a time, so synthesis never touches the event loop and a crash takes down one batch, not the
service. A slot is held only while its engine speaks: results stream back sentence by sentence, and
everything else a job does happens in the post-processing stage (``jobs.synth``). A dead process is
replaced; its batch is retried once, from the first sentence not yet returned, on another process,
and fails cleanly if that one dies too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
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
from ..pools import PoolSpec
from .model import SentenceBatch
from .worker import worker_main

log = logging.getLogger("ttsd.pool")

# (index in the text, faded int16 samples, sample rate): one sentence as the engine spoke it.
SentenceCallback = Callable[[int, "np.ndarray[Any, np.dtype[np.int16]]", int], None]
_MAX_ATTEMPTS = 2
_STOP_GRACE = 5.0


class _WorkerDied(Exception):
    pass


@dataclass(frozen=True)
class BatchResult:
    slot_seconds: float  # wall time the batch held its slot
    synthesis_seconds: float  # of which the engine was speaking


@dataclass(eq=False)
class _Assignment:
    request_id: str  # the caller's (a task id: the same again when the task is asked for again)
    future: asyncio.Future[float]  # the slot seconds the engine process measured
    on_sentence: Callable[[int, Any, int, float], None]


@dataclass(eq=False)
class _Worker:
    no: int
    slot: int  # which of the pool's slots (its device follows from it); a replacement keeps it
    process: BaseProcess
    conn: Connection
    ready: bool = False
    alive: bool = True
    # Batches sent to this process by wire id (unique per attempt, so a late answer or cancel of
    # an abandoned batch never touches a newer one of the same task), in the order it speaks them:
    # the first is being spoken, the next waits in its pipe (``_DEPTH``).
    assigned: dict[str, _Assignment] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)


# Batches a process holds at once: the one it speaks and the next. Handing over the next batch
# before the last sentence is out means the engine never waits for this event loop between
# batches (eSpeak speaks a sentence in 3 ms; a round trip through a busy loop took about 6).
_DEPTH = 2


# Told of every batch's slot time when it ends, finished or not: (batch, held seconds, engine seconds).
BatchHook = Callable[[SentenceBatch, float, float], None]


class EnginePool:
    def __init__(
        self,
        settings: Settings,
        spec: PoolSpec,
        on_batch: BatchHook | None = None,
    ) -> None:
        self._settings = settings
        self.spec = spec
        self._on_batch = on_batch
        self._ctx = multiprocessing.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: set[_Worker] = set()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._stopping = False
        self._next_no = 0
        self.fatal: str | None = None
        self.was_ready = False  # a slot loaded once: a crashed one is coming back
        self.restarts = 0
        self.waiting = 0  # batches waiting for a free slot
        self._serial = itertools.count()

    @property
    def busy(self) -> int:
        """Slots speaking."""
        return sum(1 for w in self._workers if w.assigned and w.alive)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def size(self) -> int:
        return self.spec.slots

    @property
    def ready(self) -> bool:
        return self.fatal is None and any(w.ready and w.alive for w in self._workers)

    @property
    def live(self) -> bool:
        """A job sent here will be spoken: a slot is ready, or one that was is being replaced."""
        return self.fatal is None and (self.was_ready or self.ready)

    @property
    def state(self) -> str:
        """What readiness reports for this pool's engines."""
        if self.fatal is not None:
            return f"failed to load: {self.fatal}"
        if self.ready:
            return "ready"
        return "restarting" if self.was_ready else "loading"

    @property
    def ready_workers(self) -> int:
        return sum(1 for w in self._workers if w.ready and w.alive)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.alive and w.process.pid is not None]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for slot in range(self.size):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        no = self._next_no
        self._next_no += 1
        process = self._ctx.Process(
            target=worker_main,
            args=(child_conn, self._settings, self.spec, slot, no),
            name=f"ttsd-engine-{self.name}-{no}",
            daemon=True,
        )
        process.start()
        # Only the child holds its end now, so its death shows up here as EOF.
        child_conn.close()
        worker = _Worker(no=no, slot=slot, process=process, conn=parent_conn)
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
            worker.ready = self.was_ready = True
            self._wake()
        elif kind == "fatal":
            _, code, text = message
            self.fatal = f"{code}: {text}"
            log.error(
                "engine worker cannot start",
                extra={"worker": worker.no, "pool": self.name, "error": self.fatal},
            )
        elif kind == "sentence":
            _, request_id, index, rate, data, seconds = message
            assignment = worker.assigned.get(request_id)
            if assignment is not None:
                assignment.on_sentence(int(index), np.frombuffer(data, dtype=np.int16), int(rate), seconds)
        elif kind in ("done", "failed"):
            assignment = worker.assigned.pop(message[1], None)
            if assignment is not None and not assignment.future.done():
                if kind == "done":
                    assignment.future.set_result(message[2])
                else:
                    assignment.future.set_exception(job_error_from(message[2], message[3]))
            self._wake()

    def _on_exit(self, worker: _Worker) -> None:
        worker.alive = False
        self._workers.discard(worker)
        with contextlib.suppress(OSError):
            worker.conn.close()
        lost = list(worker.assigned)
        for assignment in worker.assigned.values():
            if not assignment.future.done():
                assignment.future.set_exception(_WorkerDied(f"engine process {worker.no} died"))
        worker.assigned.clear()
        if self._stopping:
            return
        log.warning(
            "engine worker exited",
            extra={
                "worker": worker.no,
                "pool": self.name,
                "exitcode": worker.process.exitcode,
                "request_ids": lost,
            },
        )
        if not worker.ready and self.fatal is not None:
            # It could not load its engines; respawning would fail the same way. The waiters are
            # woken so they fail instead of waiting for a slot that will never come.
            self._wake(everyone=True)
            return
        self.restarts += 1
        self._spawn(worker.slot)

    def _free(self) -> _Worker | None:
        """The least loaded live process with room for a batch (an idle one first)."""
        ready = [w for w in self._workers if w.ready and w.alive and len(w.assigned) < _DEPTH]
        return min(ready, key=lambda w: (len(w.assigned), w.no), default=None)

    def _wake(self, *, everyone: bool = False) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return

    async def _acquire(self) -> _Worker:
        """A process to send a batch to; FIFO among waiters."""
        first = True
        while True:
            if self.fatal is not None:
                raise EngineUnavailable(f"the {self.name} pool failed to load ({self.fatal})")
            worker = self._free()
            if worker is not None and (not first or not self._waiters):
                if self._waiters and self._free() is not None:
                    self._wake()  # room left for the next in line
                return worker
            waiter = asyncio.get_running_loop().create_future()
            if first:
                self._waiters.append(waiter)
            else:  # woken, and the room was gone: first in line again
                self._waiters.appendleft(waiter)
            first = False
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done():
                    self._wake()  # pass the wake-up this waiter took on
                else:
                    self._waiters.remove(waiter)
                raise

    def cancel(self, request_id: str) -> bool:
        """Ask the process holding ``request_id`` to stop after its current sentence (or never to
        start it)."""
        for worker in self._workers:
            for wire, assignment in list(worker.assigned.items()):
                if assignment.request_id == request_id and worker.alive:
                    with contextlib.suppress(OSError):
                        worker.conn.send(("cancel", wire))
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
            future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            wire = f"{batch.request_id}/{next(self._serial)}"
            request = dataclasses.replace(request, request_id=wire)
            worker.assigned[wire] = _Assignment(batch.request_id, future, forward)
            spoken = 0.0
            started = time.monotonic()
            held: float | None = None
            try:
                worker.conn.send(request)
                held = await asyncio.wait_for(asyncio.shield(future), self._settings.job_timeout)
            except (_WorkerDied, BrokenPipeError, OSError) as exc:
                worker.assigned.pop(wire, None)
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
                if held is None:  # not finished: what this side saw (an upper bound)
                    held = time.monotonic() - started
                slot_seconds += held
                synthesis_seconds += spoken
                if self._on_batch is not None:
                    self._on_batch(batch, held, spoken)
            if future.done() and not future.cancelled() and future.exception() is None:
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


class PoolRouter:
    """A deployment's pools as one synthesizer: each batch goes to the pool of its engine."""

    def __init__(self, pools: list[EnginePool]) -> None:
        self.pools = pools
        self._by_engine = {engine: pool for pool in pools for engine in pool.spec.engines}

    def of(self, engine: str) -> EnginePool:
        return self._by_engine[engine]

    async def synthesize(
        self,
        batch: SentenceBatch,
        on_sentence: SentenceCallback,
        on_start: Callable[[], None] | None = None,
    ) -> BatchResult:
        return await self._by_engine[batch.spec.engine].synthesize(batch, on_sentence, on_start)

    def cancel(self, request_id: str) -> None:
        for pool in self.pools:
            pool.cancel(request_id)

    async def start(self) -> None:
        for pool in self.pools:
            await pool.start()

    async def stop(self) -> None:
        await asyncio.gather(*(pool.stop() for pool in self.pools))
