"""``ttsd worker``'s Celery app for one pool: the task, bound to a per-process runtime that loads
the pool's engines after the fork, and the node's lease keeper in Celery's main process.

(Celery's thread pool would let one process keep engine slots apart from post-processing as the
embedded mode does, but its Redis consumer does not survive a broker restart: kombu closes a
channel another thread already tore down and the worker exits. Prefork stays.)
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

import billiard.process
from celery import Celery
from celery.signals import (
    task_failure,
    task_received,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from ...config import Settings
from ...pools import PoolSpec
from .broker import make_celery
from .keeper import LeaseKeeper
from .protocol import TASK_NAME
from .runtime import WorkerRuntime


def make_worker_app(settings: Settings, pool: PoolSpec) -> Celery:
    app = make_celery(settings, pool.slots)
    # One per worker node; its engine processes inherit it, so their tokens match the keeper's.
    node = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    runtime = WorkerRuntime(settings, node, pool)
    keeper = LeaseKeeper(settings, node)

    @app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
    def synthesize(payload: dict[str, Any]) -> None:
        runtime.run(payload)

    def on_process_init(**_: Any) -> None:
        # billiard numbers its processes 0..concurrency-1, and a replacement takes the number of
        # the one it replaces: so each slot keeps its device.
        runtime.load(getattr(billiard.process.current_process(), "index", 0))

    def on_process_shutdown(**_: Any) -> None:
        runtime.shutdown()

    worker_process_init.connect(on_process_init, weak=False)
    worker_process_shutdown.connect(on_process_shutdown, weak=False)
    task_received.connect(keeper.received, weak=False)
    task_failure.connect(keeper.failed, weak=False)
    worker_ready.connect(keeper.start, weak=False)
    worker_shutdown.connect(keeper.stop, weak=False)
    return app
