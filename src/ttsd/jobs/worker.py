"""The engine process: loads its engines once, then only synthesizes.

It is an engine slot and nothing else: a batch of sentences comes in, samples go back one
sentence at a time, and the slot is free for the next batch the moment the last one is sent.
Joining, encoding, storing and indexing happen elsewhere (``jobs.synth`` in the post-processing
stage), so the scarce device never waits for CPU work.

Messages to the parent: ("ready", pid) | ("fatal", code, message) | ("sentence", request_id, index,
sample_rate, int16 bytes, seconds) | ("done", request_id, slot seconds) | ("failed", request_id, code,
message).
From the parent: a SentenceBatch, ("cancel", request_id), or None to stop.

Each sentence leaves the slot as it will be cached (faded, int16): half the bytes of the engine's
float32 samples, and the fade costs a fraction of a millisecond. Messages go out through a sender
thread, so the engine starts the next sentence while the last one drains into the pipe (a sentence
is a few hundred kilobytes, and a pipe holds 64 KB until the parent reads it). py-spy put 17 % of an
eSpeak slot's time in ``send`` before.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ..audio import fade
from ..backends import load_engines
from ..config import Settings
from ..errors import JobCancelled, TtsdError
from ..logs import configure_logging
from ..pools import PoolSpec
from .model import SentenceBatch

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
                message: SentenceBatch | tuple[str, str] | None = self._conn.recv()
            except (EOFError, OSError):
                message = None  # the parent is gone
            if message is None:
                self.open = False
            elif isinstance(message, SentenceBatch):
                self.batches.append(message)
            elif message[0] == "cancel":
                self.cancelled.add(message[1])


def worker_main(conn: Connection, settings: Settings, pool: PoolSpec, slot: int, worker_no: int) -> None:
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
        conn.send(("fatal", exc.code, exc.message))
        return
    np.seterr(all="ignore")
    log.info(
        "engine worker ready",
        extra={"worker": worker_no, "pid": os.getpid(), "pool": pool.name, "device": pool.device(slot)},
    )
    outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
    sender = threading.Thread(target=_send_all, args=(conn, outbox), name="ttsd-send", daemon=True)
    sender.start()
    try:
        _serve(conn, engines, outbox)
    finally:
        outbox.put(None)
        sender.join(timeout=5)


def _send_all(conn: Connection, outbox: queue.SimpleQueue[tuple[Any, ...] | None]) -> None:
    while (message := outbox.get()) is not None:
        try:
            conn.send(message)
        except OSError:
            return  # the parent is gone


def _serve(
    conn: Connection, engines: dict[str, Any], outbox: queue.SimpleQueue[tuple[Any, ...] | None]
) -> None:
    outbox.put(("ready", os.getpid()))
    inbox = _Inbox(conn)
    while True:
        while not inbox.batches and inbox.open:
            inbox.read(block=True)  # a late cancellation may come first
        if not inbox.open:
            break
        batch = inbox.batches.popleft()
        started = time.perf_counter()
        try:
            spec = batch.spec
            engine, voice = engines[spec.engine], spec.voice_ref
            for i, sentence in zip(batch.indices, batch.sentences, strict=True):
                inbox.read(block=False)
                if batch.request_id in inbox.cancelled:
                    raise JobCancelled("every listener of this stream left")
                began = time.perf_counter()
                raw = engine.synthesize(sentence, voice, speed=spec.speed, seed=spec.seed)
                seconds = time.perf_counter() - began
                pcm = fade(raw, engine.sample_rate)
                outbox.put(("sentence", batch.request_id, i, engine.sample_rate, pcm.tobytes(), seconds))
        except TtsdError as exc:
            outbox.put(("failed", batch.request_id, exc.code, exc.message))
        except Exception:  # a fault boundary: one bad text must not take the worker down
            log.exception("synthesis failed", extra={"request_id": batch.request_id})
            outbox.put(("failed", batch.request_id, "synthesis_failed", "the engine failed on this text"))
        else:
            # The slot's own account of the time it gave this batch.
            outbox.put(("done", batch.request_id, time.perf_counter() - started))
        finally:
            inbox.cancelled.discard(batch.request_id)
            if not inbox.batches:
                inbox.cancelled.clear()  # cancellations of batches that had already finished
