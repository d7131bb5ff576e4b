"""An engine process (either mode): loads its engines once, then only synthesizes.

It is an engine slot and nothing else: the slot core (``jobs.slot``) behind a pipe, as vLLM's
``EngineCoreProc`` is its ``EngineCore`` behind a socket. Batches (``SentenceBatch``) and
``Cancel``/``Stop`` come in; ``Ready`` or ``Fatal``, then each batch's ``Spoken`` sentences and its
``BatchDone``/``BatchFailed`` go back (``jobs.messages``). The slot is free for the next batch the
moment the last sentence is sent; joining, encoding, storing and indexing happen in the
post-processing stage, so the scarce device never waits for CPU work.

Each sentence leaves the slot as it will be cached (faded, int16): half the bytes of the engine's
float32 samples. Messages go out through a sender thread, so the engine starts the next sentence
while the last one drains into the pipe (a sentence is a few hundred kilobytes, and a pipe holds
64 KB until the parent reads it). py-spy put 17 % of an eSpeak slot's time in ``send`` before.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import queue
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

import numpy as np

from ...config import Settings
from ...engines import load_engines
from ...errors import TtsdError
from ...logs import configure_logging
from ...pools import PoolSpec
from ..messages import Cancel, Fatal, FromSlot, Ready, SlotEvent, Stop, ToSlot
from ..model import SentenceBatch
from ..slot import SlotCore

log = logging.getLogger("ttsd.worker")


class _Inbox:
    """What the parent sent: batches in order (it may send the next while one is being spoken),
    cancellations, and the request to stop."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.batches: collections.deque[SentenceBatch] = collections.deque()
        self.cancelled: set[str] = set()
        self.open = True

    def read(self, *, block: bool) -> None:
        while self.open and (block or self._conn.poll()):
            block = False
            try:
                message: ToSlot = self._conn.recv()
            except (EOFError, OSError):
                message = Stop()  # the parent is gone
            match message:
                case SentenceBatch():
                    self.batches.append(message)
                case Cancel(request_id=request_id):
                    self.cancelled.add(request_id)
                case Stop():
                    self.open = False

    def is_cancelled(self, request_id: str) -> bool:
        self.read(block=False)
        return request_id in self.cancelled


def engine_process_main(
    conn: Connection, settings: Settings, pool: PoolSpec, slot: int, worker_no: int
) -> None:
    """An engine process of ``pool``: loads only that pool's engines, on the device of ``slot``."""
    # The parent owns shutdown: Ctrl-C in a terminal reaches the whole process group, and a worker
    # that died of it would look like a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a SIGTERM to the group must not cut jobs short
    configure_logging(settings)
    os.nice(settings.engine_nice)
    try:
        engines = load_engines(settings, pool.engines, pool.device(slot))
    except TtsdError as exc:
        conn.send(Fatal(exc.code, exc.message))
        return
    np.seterr(all="ignore")
    log.info(
        "engine worker ready",
        extra={"worker": worker_no, "pid": os.getpid(), "pool": pool.name, "device": pool.device(slot)},
    )
    outbox: queue.SimpleQueue[FromSlot | None] = queue.SimpleQueue()
    sender = threading.Thread(target=_send_all, args=(conn, outbox), name="ttsd-send", daemon=True)
    sender.start()
    try:
        _serve(_Inbox(conn), SlotCore(engines), outbox)
    finally:
        outbox.put(None)
        sender.join(timeout=5)


def _send_all(conn: Connection, outbox: queue.SimpleQueue[FromSlot | None]) -> None:
    while (message := outbox.get()) is not None:
        try:
            conn.send(message)
        except OSError:
            return  # the parent is gone


def _serve(inbox: _Inbox, core: SlotCore, outbox: queue.SimpleQueue[FromSlot | None]) -> None:
    outbox.put(Ready(os.getpid()))
    emit: Callable[[SlotEvent], None] = outbox.put
    while True:
        while not inbox.batches and inbox.open:
            inbox.read(block=True)  # a late cancellation may come first
        if not inbox.open:
            break
        batch = inbox.batches.popleft()
        try:
            core.speak(batch, emit, functools.partial(inbox.is_cancelled, batch.request_id))
        finally:
            inbox.cancelled.discard(batch.request_id)
            if not inbox.batches:
                inbox.cancelled.clear()  # cancellations of batches that had already finished
