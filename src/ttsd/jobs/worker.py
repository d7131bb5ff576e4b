"""The engine process: loads its engines once, then only synthesizes.

It is an engine slot and nothing else: a batch of sentences comes in, raw samples go back one
sentence at a time, and the slot is free for the next batch the moment the last one is sent.
Joining, encoding, storing and indexing happen elsewhere (``jobs.synth`` in the post-processing
stage), so the scarce device never waits for CPU work.

Messages to the parent: ("ready", pid) | ("fatal", code, message) | ("sentence", request_id, index,
sample_rate, float32 bytes, seconds) | ("done", request_id) | ("failed", request_id, code, message).
From the parent: a SentenceBatch, ("cancel", request_id), or None to stop.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from multiprocessing.connection import Connection

import numpy as np

from ..backends import load_engines
from ..config import Settings
from ..engines import Voice
from ..errors import JobCancelled, TtsdError
from ..logs import configure_logging
from .model import SentenceBatch

log = logging.getLogger("ttsd.worker")


def _cancelled(conn: Connection, request_id: str) -> bool:
    """Cancellations arrive on the same pipe while a batch runs; they are read between sentences."""
    cancelled = False
    while conn.poll():
        message = conn.recv()
        if message == ("cancel", request_id):
            cancelled = True
    return cancelled


def worker_main(conn: Connection, settings: Settings, worker_no: int) -> None:
    # The parent owns shutdown: Ctrl-C in a terminal reaches the whole process group, and a worker
    # that died of it would look like a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a SIGTERM to the group must not cut jobs short
    configure_logging(settings)
    os.nice(settings.engine_nice)
    try:
        engines = load_engines(settings)
    except TtsdError as exc:
        conn.send(("fatal", exc.code, exc.message))
        return
    np.seterr(all="ignore")
    log.info("engine worker ready", extra={"worker": worker_no, "pid": os.getpid(), "engines": list(engines)})
    conn.send(("ready", os.getpid()))
    while True:
        try:
            batch: SentenceBatch | tuple[str, str] | None = conn.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        if batch is None:
            break
        if not isinstance(batch, SentenceBatch):
            continue  # a cancellation that arrived after its batch had finished
        try:
            engine = engines[batch.engine]
            voice = Voice(batch.voice, batch.engine, batch.speaker, batch.language, "", "")
            for i, sentence in zip(batch.indices, batch.sentences, strict=True):
                if _cancelled(conn, batch.request_id):
                    raise JobCancelled("every listener of this stream left")
                started = time.perf_counter()
                raw = engine.synthesize(sentence, voice, speed=batch.speed, seed=batch.seed)
                seconds = time.perf_counter() - started
                samples = np.asarray(raw, dtype=np.float32)
                conn.send(("sentence", batch.request_id, i, engine.sample_rate, samples.tobytes(), seconds))
        except TtsdError as exc:
            conn.send(("failed", batch.request_id, exc.code, exc.message))
        except Exception:  # a fault boundary: one bad text must not take the worker down
            log.exception("synthesis failed", extra={"request_id": batch.request_id})
            conn.send(("failed", batch.request_id, "synthesis_failed", "the engine failed on this text"))
        else:
            conn.send(("done", batch.request_id))
