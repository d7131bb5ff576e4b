"""The engine worker process: loads the engines once, then runs jobs sent over its pipe.

Messages to the parent: ("ready", pid) | ("fatal", code, message) | ("stage", task_id, stage,
progress) | ("audio", task_id, sample_rate, pcm bytes) | ("audio_end", task_id) | ("done", task_id,
outcome) | ("failed", task_id, code, message). From the parent: a Job, ("cancel", task_id), or None
to stop.
"""

from __future__ import annotations

import logging
import os
import signal
from multiprocessing.connection import Connection

import numpy as np

from ..audio import Pcm16
from ..backends import build_index, build_store, load_engines
from ..config import Settings
from ..errors import JobCancelled, TtsdError
from ..logs import configure_logging
from ..state.base import Stage
from .model import Job
from .synth import run_job

log = logging.getLogger("ttsd.worker")


class PipeReporter:
    def __init__(self, conn: Connection, task_id: str) -> None:
        self._conn = conn
        self._task_id = task_id

    def stage(self, stage: Stage, progress: int) -> None:
        self._conn.send(("stage", self._task_id, stage.value, progress))

    def audio(self, pcm: Pcm16, sample_rate: int) -> None:
        self._conn.send(("audio", self._task_id, sample_rate, pcm.tobytes()))
        # Cancellations arrive on the same pipe while a job runs; look between sentences.
        while self._conn.poll():
            message = self._conn.recv()
            if message == ("cancel", self._task_id):
                raise JobCancelled("every listener of this stream left")

    def audio_end(self) -> None:
        self._conn.send(("audio_end", self._task_id))


def worker_main(conn: Connection, settings: Settings, worker_no: int) -> None:
    # The parent owns shutdown: Ctrl-C in a terminal reaches the whole process group, and a worker
    # that died of it would look like a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a SIGTERM to the group must not cut jobs short
    configure_logging(settings)
    os.nice(settings.engine_nice)
    try:
        engines = load_engines(settings)
        store = build_store(settings)
        index = build_index(settings)
    except TtsdError as exc:
        conn.send(("fatal", exc.code, exc.message))
        return
    np.seterr(all="ignore")
    log.info("engine worker ready", extra={"worker": worker_no, "pid": os.getpid(), "engines": list(engines)})
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job: Job | tuple[str, str] | None = conn.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        if job is None:
            break
        if not isinstance(job, Job):
            continue  # a cancellation that arrived after its job had finished
        try:
            outcome = run_job(
                job,
                engines,
                store,
                index,
                PipeReporter(conn, job.task_id),
                cache_ttl=settings.cache_ttl,
                cache_max_bytes=settings.cache_max_bytes,
            )
        except TtsdError as exc:
            conn.send(("failed", job.task_id, exc.code, exc.message))
        except Exception:  # a fault boundary: one bad text must not take the worker down
            log.exception("job failed", extra={"task_id": job.task_id, "key": job.key})
            conn.send(("failed", job.task_id, "synthesis_failed", "the engine failed on this text"))
        else:
            conn.send(("done", job.task_id, outcome))
    index.close()
