"""The Celery app both sides use: the API publishes with it, the worker consumes with it."""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from ...config import Settings
from ...errors import BackendUnavailable
from .protocol import TASK_NAME, publication, queue_name


def make_celery(settings: Settings) -> Celery:
    app = Celery("ttsd", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "global_keyprefix": f"{settings.redis_prefix}:celery:",
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
        },
        broker_connection_retry_on_startup=True,
        # Acknowledged once the worker's runtime has the job: a job that does not finish is handed
        # on through its lease (``LeaseKeeper``), not by the broker.
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_acks_on_failure_or_timeout=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_concurrency=1,  # the solo pool: one consumer thread hands jobs to the runtime
        worker_send_task_events=False,
    )
    return app


def publish(app: Celery, task_id: str, engine: str, payload: dict[str, Any]) -> None:
    """Publish one delivery of a job to its engine's queue."""
    try:
        app.send_task(
            TASK_NAME,
            args=[publication(payload)],
            task_id=task_id,
            queue=queue_name(engine),
            retry=False,
            # Celery copies a repr of the arguments into every message's headers, for its logs,
            # `celery inspect` and Flower: a caller's text, up to 1 KB of it, where operators read.
            # Named instead; the repr also cost a third of the publish's CPU (85 of 255 µs).
            argsrepr=f"({engine} job {task_id})",
            kwargsrepr="{}",
        )
    except (OperationalError, redis.RedisError, OSError) as exc:
        raise BackendUnavailable(f"the job broker is unreachable: {exc}", retry_after=2) from exc
