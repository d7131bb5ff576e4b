"""Job counters in Redis (the workers', and the API processes' requeues), exported by every API
process as Prometheus counters."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, Metric

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


class RedisJobStats:
    """Worker-side job counters in one Redis hash, exported by the API as Prometheus counters.

    Fields are ``metric|label|label``: e.g. ``ttsd_syntheses|piper|en-joe``."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._r = client
        self._k = keys
        self._gathering = threading.local()  # this thread's counts inside ``together``

    def _add(self, *fields: tuple[str, float]) -> None:
        gathered: list[tuple[str, float]] | None = getattr(self._gathering, "fields", None)
        if gathered is not None:
            gathered += fields
            return
        pipe = self._r.pipeline(transaction=False)
        for field, amount in fields:
            pipe.hincrbyfloat(self._k.stats, field, amount)
        pipe.execute()

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """The counts added inside, by this thread, written in one round trip at the end."""
        fields: list[tuple[str, float]] = []
        self._gathering.fields = fields
        try:
            yield
        finally:
            self._gathering.fields = None
        if fields:
            with redis_errors():
                self._add(*fields)

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
