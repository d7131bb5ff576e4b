"""Prometheus metrics, on a registry owned by one app (no process-global collectors)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


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
        self.syntheses = Counter(
            "ttsd_syntheses", "Texts synthesized by an engine", ["engine", "voice"], registry=r
        )
        self.synthesis_seconds = Counter(
            "ttsd_synthesis_seconds", "Wall time spent synthesizing", ["engine", "voice"], registry=r
        )
        self.audio_seconds = Counter("ttsd_audio_seconds", "Audio produced", ["engine", "voice"], registry=r)
        self.encodes = Counter("ttsd_encodes", "Files encoded from a master", ["format"], registry=r)
        self.job_failures = Counter("ttsd_job_failures", "Failed jobs by error code", ["code"], registry=r)
        self.engine_restarts = Gauge(
            "ttsd_engine_restarts", "Engine processes replaced after a crash", registry=r
        )
        self.queue_depth = Gauge("ttsd_queue_depth", "Jobs waiting for an engine slot", registry=r)
        self.busy_slots = Gauge("ttsd_busy_slots", "Engine slots running a job", registry=r)
        self.slots = Gauge("ttsd_slots", "Engine slots", registry=r)

    def watch(self, gauge: Gauge, read: Callable[[], float]) -> None:
        gauge.set_function(read)

    def render(self) -> bytes:
        return generate_latest(self.registry)
