"""Job counters in Redis (the workers', and the API processes' requeues), exported by every API
process as Prometheus counters."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, Metric
from redis.client import Pipeline

from ...metrics import (
    AUDIO_SECONDS,
    ENCODES,
    FAILURES,
    REQUEUED,
    SENTENCES,
    SLOT_BUSY_SECONDS,
    SYNTHESES,
    SYNTHESIS_SECONDS,
)
from .client import REDIS_DOWN, guarded, redis_errors
from .keys import RedisKeys

# KEYS: average ARGV: seconds, weight, ttl_s. An exponentially weighted moving average (as
# ``jobs.model.MovingAverage``) that every worker moves: in one script, so two workers' updates
# never overwrite each other's.
_AVERAGE = """
local old = tonumber(redis.call('GET', KEYS[1]))
local new = tonumber(ARGV[1])
if old then new = old + tonumber(ARGV[2]) * (new - old) end
redis.call('SET', KEYS[1], tostring(new), 'EX', ARGV[3])
"""

_Write = Callable[[Pipeline], object]


class RedisJobStats:
    """Worker-side job counters in one Redis hash, exported by the API as Prometheus counters.

    Fields are ``metric|label|label``: e.g. ``ttsd_syntheses|piper|en-joe``."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._r = client
        self._k = keys
        self._gathering = threading.local()  # this thread's writes inside ``together``

    def _write(self, *writes: _Write) -> None:
        gathered: list[_Write] | None = getattr(self._gathering, "writes", None)
        if gathered is not None:
            gathered += writes
            return
        pipe = self._r.pipeline(transaction=False)
        for write in writes:
            write(pipe)
        pipe.execute()

    def _add(self, *fields: tuple[str, float]) -> None:
        self._write(*(functools.partial(_increment, self._k.stats, f, amount) for f, amount in fields))

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """What is written inside, by this thread, written in one round trip at the end."""
        writes: list[_Write] = []
        self._gathering.writes = writes
        try:
            yield
        finally:
            self._gathering.writes = None
        if writes:
            with redis_errors():
                self._write(*writes)

    @guarded
    def slot_time(self, engine: str, seconds: float, weight: float) -> None:
        """Move the engine's average slot time per job (the API's admission divides by it)."""
        name = self._k.job_seconds(engine)
        self._write(lambda pipe: pipe.eval(_AVERAGE, 1, name, seconds, weight, 86400))

    @guarded
    def synthesized(self, engine: str, voice: str, audio_seconds: float) -> None:
        labels = f"{engine}|{voice}"
        self._add((f"{SYNTHESES[0]}|{labels}", 1), (f"{AUDIO_SECONDS[0]}|{labels}", audio_seconds))

    @guarded
    def engine_time(self, engine: str, voice: str, busy_seconds: float, synthesis_seconds: float) -> None:
        labels = f"{engine}|{voice}"
        self._add(
            (f"{SLOT_BUSY_SECONDS[0]}|{labels}", busy_seconds),
            (f"{SYNTHESIS_SECONDS[0]}|{labels}", synthesis_seconds),
        )

    @guarded
    def sentences(self, *, reused: int, made: int, merged: int) -> None:
        counts = (("hit", reused), ("miss", made), ("merged", merged))
        self._add(*((f"{SENTENCES[0]}|{result}", count) for result, count in counts if count))

    @guarded
    def encoded(self, fmt: str) -> None:
        self._add((f"{ENCODES[0]}|{fmt}", 1))

    @guarded
    def failed(self, code: str) -> None:
        self._add((f"{FAILURES[0]}|{code}", 1))

    @guarded
    def requeued(self, reason: str) -> None:
        """A job published again (by whichever API process swept it): counted where every API
        process reads it, so the count outlives the process that counted."""
        self._r.hincrbyfloat(self._k.stats, f"{REQUEUED[0]}|{reason}", 1)

    def collect(self) -> Iterator[Metric]:
        families = {
            SYNTHESES[0]: CounterMetricFamily(*SYNTHESES, labels=["engine", "voice"]),
            SYNTHESIS_SECONDS[0]: CounterMetricFamily(*SYNTHESIS_SECONDS, labels=["engine", "voice"]),
            SLOT_BUSY_SECONDS[0]: CounterMetricFamily(*SLOT_BUSY_SECONDS, labels=["engine", "voice"]),
            SENTENCES[0]: CounterMetricFamily(*SENTENCES, labels=["result"]),
            AUDIO_SECONDS[0]: CounterMetricFamily(*AUDIO_SECONDS, labels=["engine", "voice"]),
            ENCODES[0]: CounterMetricFamily(*ENCODES, labels=["format"]),
            FAILURES[0]: CounterMetricFamily(*FAILURES, labels=["code"]),
            REQUEUED[0]: CounterMetricFamily(*REQUEUED, labels=["reason"]),
        }
        try:
            fields: dict[Any, Any] = self._r.hgetall(self._k.stats)
        except REDIS_DOWN:
            fields = {}  # a scrape while Redis is away shows no job figures rather than failing
        for field, value in fields.items():
            name, *labels = field.decode().split("|")
            if name in families:
                families[name].add_metric(labels, float(value))
        yield from families.values()


def _increment(stats: str, field: str, amount: float, pipe: Pipeline) -> object:
    return pipe.hincrbyfloat(stats, field, amount)
