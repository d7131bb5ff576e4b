"""A pool of engine processes: the bounded set of engine slots of one ``PoolSpec``.

Each process loads its pool's engines once, on its slot's device, and speaks one batch of sentences
at a time, so synthesis never touches the event loop and a crash takes down one batch, not the
service. A slot is held only while its engine speaks: results stream back sentence by sentence, and
everything else a job does happens in the post-processing stage (``jobs.body``). A dead process is
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
import time
from collections.abc import Callable
from typing import Any

from ...config import Settings
from ...errors import EngineCrashed, EngineUnavailable, JobTimeout, job_error_from
from ...pools import PoolSpec
from ..messages import BatchDone, BatchFailed, Cancel, Fatal, FromSlot, Ready, Spoken, Stop
from ..model import BatchResult, SentenceBatch, SentenceCallback
from .handle import Assignment, EngineProcess, WorkerDied, spawn
from .line import Line

log = logging.getLogger("ttsd.pool")

_MAX_ATTEMPTS = 2
_STOP_GRACE = 5.0


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
        gate: Callable[[], bool] = lambda: True,
    ) -> None:
        self._settings = settings
        self.spec = spec
        self._on_batch = on_batch
        # Whether post-processing can take what another batch makes (``jobs.post``): while it
        # cannot, no slot takes a batch, and the wake-up comes from that stage (``wake``).
        self._gate = gate
        self._ctx = multiprocessing.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: set[EngineProcess] = set()
        self._line = Line()
        self._stopping = False
        self._next_no = 0
        self.fatal: str | None = None
        self.was_ready = False  # a slot loaded once: a crashed one is coming back
        self.restarts = 0
        self._in_line: collections.Counter[str] = collections.Counter()  # batches' callers, by request id
        self._serial = itertools.count()

    @property
    def busy(self) -> int:
        """Slots speaking."""
        return sum(1 for w in self._workers if w.assigned and w.alive)

    @property
    def waiting(self) -> int:
        """Batches waiting for a slot to take them."""
        return sum(self._in_line.values())

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

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.alive and w.process.pid is not None]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for slot in range(self.size):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        no = self._next_no
        self._next_no += 1
        worker = spawn(self._ctx, self._settings, self.spec, slot, no)
        self._workers.add(worker)
        assert self._loop is not None
        worker.listen(self._loop, self._on_message, self._on_exit)

    def _on_message(self, worker: EngineProcess, message: FromSlot) -> None:
        match message:
            case Spoken():
                assignment = worker.assigned.get(message.request_id)
                if assignment is not None:
                    assignment.on_sentence(
                        message.index, message.samples, message.sample_rate, message.seconds
                    )
            case BatchDone() | BatchFailed():
                assignment = worker.assigned.pop(message.request_id, None)
                if assignment is not None and not assignment.future.done():
                    if isinstance(message, BatchDone):
                        assignment.future.set_result(message.slot_seconds)
                    else:
                        assignment.future.set_exception(job_error_from(message.code, message.message))
                self._wake()
            case Ready():
                worker.ready = self.was_ready = True
                self._wake()
            case Fatal():
                self.fatal = f"{message.code}: {message.message}"
                log.error(
                    "engine worker cannot start",
                    extra={"worker": worker.no, "pool": self.name, "error": self.fatal},
                )

    def _on_exit(self, worker: EngineProcess) -> None:
        worker.alive = False
        self._workers.discard(worker)
        with contextlib.suppress(OSError):
            worker.conn.close()
        lost = list(worker.assigned)
        for assignment in worker.assigned.values():
            if not assignment.future.done():
                assignment.future.set_exception(WorkerDied(f"engine process {worker.no} died"))
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

    def _free(self) -> EngineProcess | None:
        """The least loaded live process with room for a batch (an idle one first)."""
        if not self._gate():
            return None
        ready = [w for w in self._workers if w.ready and w.alive and len(w.assigned) < _DEPTH]
        return min(ready, key=lambda w: (len(w.assigned), w.no), default=None)

    def wake(self) -> None:
        """Room may have come from outside the pool (the gate opened)."""
        self._line.wake()

    def _wake(self, *, everyone: bool = False) -> None:
        self._line.wake(everyone=everyone)

    def _check(self) -> None:
        if self.fatal is not None:
            raise EngineUnavailable(f"the {self.name} pool failed to load ({self.fatal})")

    def cancel(self, request_id: str) -> bool:
        """Ask the process holding ``request_id`` to stop after its current sentence (or never to
        start it)."""
        for worker in self._workers:
            for wire, assignment in list(worker.assigned.items()):
                if assignment.request_id == request_id and worker.alive:
                    with contextlib.suppress(OSError):
                        worker.conn.send(Cancel(wire))
                    return True
        return False

    def unspoken(self, request_id: str) -> bool:
        """Whether a batch of ``request_id`` waits for a slot: in line, or handed to a process to
        wait behind the batch it speaks (``_DEPTH``)."""
        if request_id in self._in_line:
            return True
        return any(a.request_id == request_id for w in self._workers for a in list(w.assigned.values())[1:])

    async def synthesize(
        self,
        batch: SentenceBatch,
        on_sentence: SentenceCallback,
        on_start: Callable[[], None] | None = None,
    ) -> BatchResult:
        """Speak a batch on the next free slot (earliest deadline first among waiters, see
        ``Line``); ``on_sentence`` sees each sentence as it is made, ``on_start`` the moment a slot
        is taken."""
        returned: set[int] = set()
        spoken = 0.0  # engine seconds of the current attempt

        def forward(index: int, samples: Any, rate: int, seconds: float) -> None:
            nonlocal spoken
            spoken += seconds
            if index not in returned:  # a retry after a crash repeats nothing already passed on
                returned.add(index)
                on_sentence(index, samples, rate)

        slot_seconds = synthesis_seconds = 0.0
        deadline = batch.deadline if batch.deadline is not None else time.monotonic()
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            todo = [(i, t) for i, t in zip(batch.indices, batch.sentences, strict=True) if i not in returned]
            request = dataclasses.replace(
                batch, indices=tuple(i for i, _ in todo), sentences=tuple(t for _, t in todo)
            )
            self._in_line[batch.request_id] += 1
            try:
                worker = await self._line.take(self._free, self._check, deadline)
            finally:
                self._in_line -= collections.Counter({batch.request_id: 1})
            if on_start is not None and attempt == 1:
                on_start()
            future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            wire = f"{batch.request_id}/{next(self._serial)}"
            request = dataclasses.replace(request, request_id=wire)
            worker.assigned[wire] = Assignment(batch.request_id, future, forward)
            spoken = 0.0
            started = time.monotonic()
            held: float | None = None
            try:
                worker.conn.send(request)
                async with asyncio.timeout(self._settings.job_timeout):
                    held = await asyncio.shield(future)
            except (WorkerDied, BrokenPipeError, OSError) as exc:
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
                # when the process answers (with a failure nobody is left to read).
                future.add_done_callback(lambda f: f.cancelled() or f.exception())
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
                worker.conn.send(Stop())
        for worker in list(self._workers):
            await asyncio.to_thread(worker.process.join, _STOP_GRACE)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=1)
