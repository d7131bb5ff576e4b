"""The engine slot of one Celery worker process: the slot core on a thread of its own, so the
process's event loop stores earlier sentences while the engine speaks the next."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from ...engines import Engine
from ...errors import job_error_from
from ..messages import BatchDone, BatchFailed, SlotEvent, Spoken
from ..model import BatchResult, SentenceBatch, SentenceCallback
from ..slot import SlotCore

# Told of every batch's slot time when it ends, finished or not: (batch, held seconds, engine seconds).
BatchHook = Callable[[SentenceBatch, float, float], None]


class ThreadSlot:
    def __init__(self, engines: Mapping[str, Engine], on_batch: BatchHook) -> None:
        self._core = SlotCore(engines)
        self._on_batch = on_batch
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ttsd-engine")

    async def synthesize(
        self,
        batch: SentenceBatch,
        on_sentence: SentenceCallback,
        on_start: Callable[[], None] | None = None,
    ) -> BatchResult:
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        ended: asyncio.Future[SlotEvent] = loop.create_future()
        spoken = 0.0

        def deliver(event: SlotEvent) -> None:  # on the event loop, in the order the slot emitted
            nonlocal spoken
            if isinstance(event, Spoken):
                spoken += event.seconds
                if not ended.done():
                    on_sentence(event.index, event.samples, event.sample_rate)
            elif not ended.done():
                ended.set_result(event)

        def emit(event: SlotEvent) -> None:  # on the slot's thread
            loop.call_soon_threadsafe(deliver, event)

        if on_start is not None:
            on_start()
        started = loop.time()
        work = loop.run_in_executor(self._thread, self._core.speak, batch, emit, cancelled.is_set)
        work.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            event = await ended
        finally:
            # Abandoned (the job failed, timed out or was cancelled): the engine stops at its next
            # sentence or chunk, and the thread takes no other batch before it has. Not awaited: a
            # hung engine must not keep the job from ending (its process is then replaced).
            cancelled.set()
            held = loop.time() - started
            self._on_batch(batch, held, spoken)
        if isinstance(event, BatchFailed):
            raise job_error_from(event.code, event.message)
        assert isinstance(event, BatchDone)
        return BatchResult(held, spoken)
