"""Connections to Redis and what a lost connection becomes.

Short timeouts throughout; connection failures become ``BackendUnavailable`` (503 + Retry-After), so
the API degrades to clear errors while Redis is away and recovers without a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from ...config import Settings
from ...errors import BackendUnavailable

P = ParamSpec("P")
R = TypeVar("R")

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError)


_CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": 5,
    "socket_connect_timeout": 2,
    "health_check_interval": 15,
    "decode_responses": False,
}


def connect(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, retry=Retry(NoBackoff(), 1), **_CLIENT_OPTIONS)


def connect_async(settings: Settings) -> redis.asyncio.Redis:
    from redis.asyncio.retry import Retry as AsyncRetry

    return redis.asyncio.Redis.from_url(
        settings.redis_url, retry=AsyncRetry(NoBackoff(), 1), **_CLIENT_OPTIONS
    )


def raise_dropped_cancel() -> None:
    """Raise the cancel of the running task if a Redis call dropped it. Python 3.11's
    ``asyncio.wait_for``, which redis-py's asyncio client runs as it opens a connection, returns the
    result of a call that completes as its task is cancelled, and the cancel is lost: a loop of
    Redis calls, checking after each, still stops (a listener whose caller hung up)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@contextmanager
def redis_errors() -> Iterator[None]:
    try:
        yield
    except REDIS_DOWN as exc:
        raise BackendUnavailable(f"Redis is unreachable: {exc}", retry_after=2) from exc


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with redis_errors():
            return fn(*args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper
