"""``ttsd worker``'s Celery app for one pool: the task hands each job to the node's runtime (in
Celery's main process, with its solo pool), and the lease keeper renews what the node holds."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_init,
    setup_logging,
    task_received,
    worker_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from ...config import Settings
from ...logs import adopt, configure_logging
from ...pools import PoolSpec
from ..model import Job
from .broker import make_celery, publish
from .keeper import LeaseKeeper
from .protocol import TASK_NAME
from .runtime import WorkerRuntime


def make_worker_app(settings: Settings, pool: PoolSpec) -> Celery:
    app = make_celery(settings)
    node = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    runtime = WorkerRuntime(
        settings, node, pool, lambda task_id, job: publish(app, task_id, Job.from_dict(job).spec.engine, job)
    )
    keeper = LeaseKeeper(settings, node, running=runtime.held)

    @app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
    def synthesize(payload: dict[str, Any]) -> None:
        runtime.accept(payload)

    def on_logging(**_: Any) -> None:
        # Celery's and kombu's lines (and warnings, such as Celery's about running as root) go
        # through ttsd's formatter, so a JSON log stays all JSON. Done as the worker is made,
        # before Celery's first warning and before the runtime loads.
        configure_logging(settings)
        adopt("celery", "kombu", "py.warnings")
        # Per task, Celery logs a message received and its task returning, which here is the job
        # handed to the runtime, not done: ttsd.jobs logs each job's end. At hundreds of jobs a
        # second, formatting those two lines was about 5 % of the worker's CPU (py-spy).
        for name in ("celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)

    def on_init(**_: Any) -> None:
        runtime.load()

    def on_shutdown(**_: Any) -> None:
        runtime.drain()
        keeper.stop()

    celeryd_init.connect(on_logging, weak=False)
    # A receiver of this signal, whatever it does, keeps Celery from adding its own handler to the
    # root logger.
    setup_logging.connect(lambda **_: None, weak=False)
    worker_init.connect(on_init, weak=False)
    worker_shutting_down.connect(lambda **_: runtime.stop_taking(), weak=False)
    task_received.connect(keeper.received, weak=False)
    worker_ready.connect(keeper.start, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
    return app
