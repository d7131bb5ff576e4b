"""The post-processing stage: a bounded thread pool for reading, encoding, storing and indexing,
and how far behind it is.

Engine slots hand their audio here and go on speaking, so a fast engine (eSpeak: 3 ms a sentence)
outruns it: without a bound, a burst of misses leaves every slot idle with all its audio held in
memory, waiting to be stored, while the queue reads empty. So the stage counts the operations it
has been given and not finished (``pending``); at ``TTSD_POST_BACKLOG`` it is *behind*, and the
slots take no new batch (``EnginePool`` asks ``open`` before it hands one out) until it catches
up. Jobs then wait in their queue, where depth, the predicted wait and Retry-After count them,
and admission sheds the excess as for any full queue. Memory is bounded by settings, not by the
burst.

What a job costs this stage (thread seconds, summed over its operations) is measured per job with
a tally that follows the job's tasks (a context variable), so admission can tell when this stage,
not the slots, sets the pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from ..config import Settings
from .model import MovingAverage

T = TypeVar("T")
# Trimming walks every arena: at most this often (seconds).
_TRIM_EVERY = 1.0
log = logging.getLogger("ttsd.post")


class PostLoad(NamedTuple):
    """The stage as admission sees it (``PostStage.load``)."""

    per_job: float = 0.0  # seconds of the stage's throughput a job takes
    drain: float = 0.0  # seconds until what it holds now is done


@dataclass
class Tally:
    seconds: float = 0.0


_TALLY: ContextVar[Tally | None] = ContextVar("ttsd_post_tally", default=None)


class PostStage:
    def __init__(self, workers: int, limit: int, nice: int = 0) -> None:
        def lower_priority() -> None:
            # On shared cores these threads yield to the engines (and the engines to the event
            # loop): a piece stored a moment later costs nothing, a slot waiting for CPU does.
            with contextlib.suppress(OSError):  # Linux: a thread is a task with its own priority
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)

        self.workers = workers
        self.limit = limit
        self.pending = 0
        self.job_time = MovingAverage()  # thread seconds a job spends here
        self._op_seconds = MovingAverage()
        self._executor = ThreadPoolExecutor(
            workers, thread_name_prefix="ttsd-post", initializer=lower_priority
        )
        self._wakers: list[Callable[[], None]] = []
        self._trim = _malloc_trim()
        self._trimmed_at = 0.0

    @property
    def open(self) -> bool:
        """Whether a slot may take another batch."""
        return self.pending < self.limit

    def on_room(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever the stage was behind and has room again."""
        self._wakers.append(wake)

    def load(self) -> PostLoad:
        """What admission adds to a queue's predicted wait for this stage."""
        per_op = self._op_seconds.seconds or 0.0
        return PostLoad(
            per_job=(self.job_time.seconds or 0.0) / self.workers,
            drain=self.pending * per_op / self.workers,
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the stage's threads, counted as pending until it returns."""
        tally = _TALLY.get()
        self.pending += 1
        try:
            seconds, result = await asyncio.get_running_loop().run_in_executor(
                self._executor, _timed, fn, args
            )
        finally:
            self.pending -= 1
            if self.pending == self.limit - 1:
                for wake in self._wakers:
                    wake()
            if self.pending == 0:
                self._trim_soon()
        self._op_seconds.observe(seconds)
        if tally is not None:
            tally.seconds += seconds
        return result

    def _trim_soon(self) -> None:
        """Idle: give freed native memory (encoders' buffers, sample arrays) back to the system;
        glibc keeps it in its per-thread arenas otherwise. Trimming walks every arena, so not
        more often than ``_TRIM_EVERY``."""
        if self._trim is not None and time.monotonic() - self._trimmed_at > _TRIM_EVERY:
            self._trimmed_at = time.monotonic()
            self._executor.submit(self._trim, 0)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Fire and forget (figures to record): not counted, never waited for."""
        self._executor.submit(fn, *args)

    @contextlib.contextmanager
    def tally(self) -> Iterator[Tally]:
        """Sum the thread seconds of every ``run`` inside (tasks started inside included)."""
        tally = Tally()
        token = _TALLY.set(tally)
        try:
            yield tally
        finally:
            _TALLY.reset(token)
            self.job_time.observe(tally.seconds)

    def shutdown(self, *, wait: bool = False) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=not wait)


def _timed(fn: Callable[..., T], args: tuple[Any, ...]) -> tuple[float, T]:
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, where there is one."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def post_stage(settings: Settings) -> PostStage:
    return PostStage(settings.post_workers, settings.post_backlog, nice=min(19, settings.engine_nice + 5))
