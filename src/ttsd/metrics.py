"""Prometheus metrics, on a registry owned by one app (no process-global collectors).

Job figures (syntheses, audio seconds, encodes, failures) are recorded where jobs finish: in the API
process in embedded mode (``PrometheusJobStats``), in Redis by the Celery workers in distributed
mode (``state.redis.RedisJobStats``, exported by the API under the same names).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

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


class JobStats(Protocol):
    def synthesized(self, engine: str, voice: str, audio_seconds: float) -> None:
        """A text for which an engine spoke at least one sentence."""

    def engine_time(self, engine: str, voice: str, busy_seconds: float, synthesis_seconds: float) -> None:
        """One batch on a slot, finished or not."""

    def sentences(self, *, reused: int, made: int, merged: int) -> None: ...

    def encoded(self, fmt: str) -> None: ...

    def failed(self, code: str) -> None: ...


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
        self.queue_depth = Gauge("ttsd_queue_depth", "Jobs waiting for an engine slot", registry=r)
        self.busy_slots = Gauge("ttsd_busy_slots", "Engine slots running a job", registry=r)
        self.slots = Gauge("ttsd_slots", "Engine slots", registry=r)
        self.engine_restarts = Gauge(
            "ttsd_engine_restarts", "Engine processes replaced after a crash", registry=r
        )
        self.requeued = Counter(
            "ttsd_jobs_requeued",
            "Jobs queued again by this API process: given up by a worker whose engine process died,"
            " lease lapsed (worker lost or frozen), popped from the queue but never taken, never taken",
            ["reason"],
            registry=r,
        )

    def watch(self, gauge: Gauge, read: Callable[[], float]) -> None:
        gauge.set_function(read)

    def snapshot(self) -> dict[str, float]:
        """The figures the playground's live panel shows (cumulative counters, current gauges)."""
        total_requests = 0.0
        results = {"hit": 0.0, "miss": 0.0, "merged": 0.0}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == "ttsd_http_requests_total":
                    total_requests += sample.value
                elif sample.name == "ttsd_cache_requests_total":
                    results[sample.labels["result"]] = (
                        results.get(sample.labels["result"], 0.0) + sample.value
                    )

        def gauge(name: str) -> float:
            value = self.registry.get_sample_value(name)
            return 0.0 if value is None or value != value else value  # NaN while Redis is away

        return {
            "requests_total": total_requests,
            "hits_total": results["hit"],
            "misses_total": results["miss"],
            "merged_total": results["merged"],
            "queue_depth": gauge("ttsd_queue_depth"),
            "busy_slots": gauge("ttsd_busy_slots"),
            "slots": gauge("ttsd_slots"),
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)
