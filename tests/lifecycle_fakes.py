"""What the lifecycle tests (``test_lifecycle*``) share: an injected sleep and clock, bodies that
succeed or fail as told, and a lifecycle built on them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from ttsd.jobs.lifecycle import Lifecycle, Retries
from ttsd.jobs.model import Job, JobOutcome
from ttsd.metrics import PrometheusJobStats
from ttsd.state.base import CacheEntry

A, B = "Hello there.", "This is the second sentence."


class Sleeps:
    """An injected ``sleep`` and ``clock``: a back-off moves time on by exactly its delay."""

    def __init__(self) -> None:
        self.now = 0.0
        self.delays: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def outcome(j: Job) -> JobOutcome:
    now = time.time()
    entry = CacheEntry(
        j.key, j.fmt, f"{j.key[:2]}/{j.key}/audio.pcm", 4, "e", "audio/pcm", 16000, 0.1, now, now
    )
    return JobOutcome(entry=entry, synthesized=True, audio_seconds=0.1, synthesis_seconds=0.05, sentences=1)


def failing(error: BaseException, *, times: int | None = None, then: JobOutcome | None = None) -> tuple[
    Callable[[], Awaitable[JobOutcome]], list[int]
]:  # fmt: skip
    """A body that raises ``error`` (the first ``times`` tries, else always), then returns ``then``."""
    tries: list[int] = []

    async def body() -> JobOutcome:
        tries.append(len(tries) + 1)
        if times is None or len(tries) <= times:
            raise error
        assert then is not None
        return then

    return body, tries


def failures(registry: CollectorRegistry, code: str) -> float:
    return registry.get_sample_value("ttsd_job_failures_total", {"code": code}) or 0.0


def lifecycle(
    registry: CollectorRegistry,
    *,
    timeout: float = 5.0,
    retries: Retries | None = None,
    passthrough: tuple[type[BaseException], ...] = (),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Lifecycle:
    return Lifecycle(
        timeout,
        PrometheusJobStats(registry),
        retries=retries or Retries(),
        passthrough=passthrough,
        sleep=sleep,
        clock=clock,
    )
