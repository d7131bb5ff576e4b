"""Prometheus metrics, on a registry owned by one app (no process-global collectors).

Job figures (syntheses, audio seconds, encodes, failures) are recorded where jobs finish: in the API
process in embedded mode (``PrometheusJobStats``), in Redis by the Celery workers in distributed
mode (``state.redis.stats.RedisJobStats``, exported by the API under the same names).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .errors import Unavailable

SYNTHESES = ("ttsd_syntheses", "Texts synthesized by an engine")
SYNTHESIS_SECONDS = ("ttsd_synthesis_seconds", "Engine time spent speaking, inside the slots")
SLOT_BUSY_SECONDS = (
    "ttsd_slot_busy_seconds",
    "Wall time engine slots were held (synthesis plus the slot's own overhead)",
)
AUDIO_SECONDS = ("ttsd_audio_seconds", "Audio produced by engines")
SENTENCES = (
    "ttsd_sentence_requests",
    "Sentences of synthesized texts by outcome: hit (cached piece), miss (engine), merged (another job's)",
)
ENCODES = ("ttsd_encodes", "Files encoded from a master")
FAILURES = ("ttsd_job_failures", "Failed jobs by error code")
REQUEUED = (
    "ttsd_jobs_requeued",
    "Jobs queued again (distributed mode, counted in Redis): given up by a worker whose run ended"
    " unfinished, lease lapsed (worker lost or frozen), popped from the queue but never taken, never taken",
)


class JobStats(Protocol):
    def synthesized(self, engine: str, voice: str, audio_seconds: float) -> None:
        """A text for which an engine spoke at least one sentence."""

    def engine_time(self, engine: str, voice: str, busy_seconds: float, synthesis_seconds: float) -> None:
        """One batch on a slot, finished or not."""

    def sentences(self, *, reused: int, made: int, merged: int) -> None: ...

    def encoded(self, fmt: str) -> None: ...

    def failed(self, code: str) -> None: ...

    def together(self) -> AbstractContextManager[None]:
        """The counts added inside reach a remote store in one write (a job's at its end)."""
        ...


class PrometheusJobStats:
    def __init__(self, registry: CollectorRegistry) -> None:
        voice = ["engine", "voice"]
        self._syntheses = Counter(*SYNTHESES, voice, registry=registry)
        self._seconds = Counter(*SYNTHESIS_SECONDS, voice, registry=registry)
        self._busy = Counter(*SLOT_BUSY_SECONDS, voice, registry=registry)
        self._audio = Counter(*AUDIO_SECONDS, voice, registry=registry)
        self._sentences = Counter(*SENTENCES, ["result"], registry=registry)
        self._encodes = Counter(*ENCODES, ["format"], registry=registry)
        self._failures = Counter(*FAILURES, ["code"], registry=registry)

    def together(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()  # counted in this process: nothing to gather

    def synthesized(self, engine: str, voice: str, audio_seconds: float) -> None:
        self._syntheses.labels(engine, voice).inc()
        self._audio.labels(engine, voice).inc(audio_seconds)

    def engine_time(self, engine: str, voice: str, busy_seconds: float, synthesis_seconds: float) -> None:
        self._busy.labels(engine, voice).inc(busy_seconds)
        self._seconds.labels(engine, voice).inc(synthesis_seconds)

    def sentences(self, *, reused: int, made: int, merged: int) -> None:
        for result, count in (("hit", reused), ("miss", made), ("merged", merged)):
            if count:
                self._sentences.labels(result).inc(count)

    def encoded(self, fmt: str) -> None:
        self._encodes.labels(fmt).inc()

    def failed(self, code: str) -> None:
        self._failures.labels(code).inc()


class PoolFigures(NamedTuple):
    pool: str
    depth: float  # jobs waiting for one of the pool's slots
    busy: float
    slots: float
    restarts: float = 0.0


class PoolGauges(Collector):
    """The per-pool gauges, read when scraped: pools come and go in distributed mode (workers
    announce theirs), so they are not fixed label sets."""

    def __init__(self) -> None:
        self.read: Callable[[], Iterable[PoolFigures]] = list
        self.post_backlog: Callable[[], float] = lambda: 0.0

    def figures(self) -> list[PoolFigures]:
        try:
            return list(self.read())
        except Unavailable:
            return []  # a scrape while Redis is away must not fail

    def describe(self) -> Iterable[Metric]:
        return [
            *(GaugeMetricFamily(name, text, labels=["pool"]) for name, text, _ in _POOL_GAUGES),
            GaugeMetricFamily(*_POST_BACKLOG),
        ]

    def collect(self) -> Iterable[Metric]:
        families = [GaugeMetricFamily(name, text, labels=["pool"]) for name, text, _ in _POOL_GAUGES]
        for figures in self.figures():
            for family, (_, _, field) in zip(families, _POOL_GAUGES, strict=True):
                family.add_metric([figures.pool], getattr(figures, field))
        return [*families, GaugeMetricFamily(*_POST_BACKLOG, value=self.post_backlog())]


_POOL_GAUGES = (
    ("ttsd_queue_depth", "Jobs waiting for an engine slot, by pool", "depth"),
    ("ttsd_busy_slots", "Engine slots running a job, by pool", "busy"),
    ("ttsd_slots", "Engine slots, by pool", "slots"),
    ("ttsd_engine_restarts", "Engine processes replaced after a crash, by pool", "restarts"),
)
_POST_BACKLOG = (
    "ttsd_post_backlog",
    "Post-processing operations (reading, encoding, storing, indexing) given and not yet finished"
    " in this process; at TTSD_POST_BACKLOG the engine slots pause",
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.cache_requests = Counter(
            "ttsd_cache_requests",
            "Synthesis requests by outcome: hit, miss, merged (single flight)",
            ["result"],
            registry=r,
        )
        self.pools = PoolGauges()
        r.register(self.pools)
        self.queue_wait = Histogram(
            "ttsd_queue_wait_seconds",
            "Time from a job's acceptance to its first engine slot, by pool",
            ["pool"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        # Tenants by name (never by key); the labels are the configured names, a bounded set.
        self.tenant_requests = Counter(
            "ttsd_tenant_requests", "Requests with a valid API key, by tenant", ["tenant"], registry=r
        )
        self.auth_failures = Counter(
            "ttsd_auth_failures",
            "Requests with a missing or wrong API key: refused (401), or limited (429: too many from"
            " that address)",
            ["outcome"],
            registry=r,
        )

    def watch_pools(
        self, read: Callable[[], Iterable[PoolFigures]], post_backlog: Callable[[], float] | None = None
    ) -> None:
        self.pools.read = read
        if post_backlog is not None:
            self.pools.post_backlog = post_backlog

    def snapshot(self) -> dict[str, Any]:
        """The figures the playground's live panel shows (cumulative counters, current gauges),
        and this process's requests by tenant."""
        total_requests = 0.0
        results = {"hit": 0.0, "miss": 0.0, "merged": 0.0}
        tenants: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == "ttsd_tenant_requests_total":
                    tenants[sample.labels["tenant"]] = sample.value
                elif sample.name == "ttsd_http_requests_total":
                    total_requests += sample.value
                elif sample.name == "ttsd_cache_requests_total":
                    results[sample.labels["result"]] = (
                        results.get(sample.labels["result"], 0.0) + sample.value
                    )

        totals = {"queue_depth": 0.0, "busy_slots": 0.0, "slots": 0.0}
        for figures in self.pools.figures():
            totals["queue_depth"] += figures.depth
            totals["busy_slots"] += figures.busy
            totals["slots"] += figures.slots
        totals["post_backlog"] = self.pools.post_backlog()
        return {
            "requests_total": total_requests,
            "hits_total": results["hit"],
            "misses_total": results["miss"],
            "merged_total": results["merged"],
            **totals,
            "tenant_requests_total": tenants,
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)
