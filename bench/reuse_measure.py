"""What ``bench.reuse`` reads off a server and the machine: ttsd's counters, CPU seconds of its
processes and of everything else, and a bare engine timed in its own process."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import psutil

from .suite import metric

ESPEAK_VOICE = "en-us-female"
BIG = {"TTSD_QUEUE_LIMIT": "100000", "TTSD_MAX_WAIT": "100000"}
SLOTS = 2
PIPER_ENV = {"TTSD_ENGINES": "piper", "TTSD_DEFAULT_VOICE": "en-joe", "TTSD_ENGINE_SLOTS": str(SLOTS), **BIG}

_COUNTERS = {
    "engine_seconds": ("ttsd_synthesis_seconds_total", {}),
    "slot_busy_seconds": ("ttsd_slot_busy_seconds_total", {}),
    "syntheses": ("ttsd_syntheses_total", {}),
    "engine_audio_seconds": ("ttsd_audio_seconds_total", {}),
    "text_hit": ("ttsd_cache_requests_total", {"result": "hit"}),
    "text_miss": ("ttsd_cache_requests_total", {"result": "miss"}),
    "text_merged": ("ttsd_cache_requests_total", {"result": "merged"}),
    "sentence_hit": ("ttsd_sentence_requests_total", {"result": "hit"}),
    "sentence_miss": ("ttsd_sentence_requests_total", {"result": "miss"}),
    "sentence_merged": ("ttsd_sentence_requests_total", {"result": "merged"}),
    "job_failures": ("ttsd_job_failures_total", {}),
}


def counters(url: str) -> dict[str, float]:
    return {name: metric(url, m, **labels) for name, (m, labels) in _COUNTERS.items()}


class CpuMeter:
    """CPU seconds (user + system) of ttsd's engine processes, of its API process, of everything
    this benchmark started, and of the whole machine: what the other processes on the machine took
    during a run shows whether its figures were disturbed."""

    def __init__(self, server_pid: int) -> None:
        self._server = psutil.Process(server_pid)

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        try:
            t = process.cpu_times()
        except psutil.Error:
            return 0.0
        return float(t.user + t.system)

    def read(self) -> dict[str, float]:
        engines = 0.0
        for child in self._server.children():
            try:
                if any("spawn_main" in part for part in child.cmdline()):
                    engines += self._cpu(child)
            except psutil.Error:
                pass
        return {"engine_cpu_seconds": engines, "api_cpu_seconds": self._cpu(self._server),
                "outside_cpu_seconds": outside_cpu()}  # fmt: skip

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        d = {k: after[k] - before[k] for k in after}
        d["other_cpu_seconds"] = max(0.0, d.pop("outside_cpu_seconds"))
        return d


def outside_cpu() -> float:
    """CPU seconds the machine has spent so far outside this benchmark's own processes (counted
    from their start; compare two readings)."""
    me = psutil.Process()
    own = me.cpu_times()
    bench = own.user + own.system + own.children_user + own.children_system
    for child in me.children(recursive=True):
        try:
            t = child.cpu_times()
            bench += t.user + t.system
        except psutil.Error:
            pass
    machine_times = psutil.cpu_times()
    busy = sum(machine_times) - machine_times.idle - getattr(machine_times, "iowait", 0.0)
    return float(busy - bench)


def _bare_worker(queue: Any, engine_name: str, voice_name: str, sentences: list[str]) -> None:
    from ttsd.engines import REGISTRY

    spec = REGISTRY[engine_name]
    engine = spec.load(threads=1)
    voice = next(v for v in spec.voices if v.name == voice_name)
    for warm in ("Warm up.", "Warming the engine up with a longer sentence of a few words."):
        engine.synthesize(warm, voice, speed=1.0, seed=None)
    times = []
    for sentence in sentences:
        started = time.perf_counter()
        engine.synthesize(sentence, voice, speed=1.0, seed=None)
        times.append(time.perf_counter() - started)
    queue.put(times)


def bare_engine(engine: str, voice: str, sentences: list[str]) -> list[float]:
    """Seconds the bare engine (one thread, as in one slot) takes for each sentence, in a loop."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_bare_worker, args=(queue, engine, voice, sentences))
    process.start()
    times: list[float] = queue.get(timeout=600)
    process.join(timeout=30)
    return times


def bare_engine_checked(engine: str, voice: str, sentences: list[str]) -> tuple[list[float], float]:
    """``bare_engine``, and the CPU seconds other processes on the machine took meanwhile."""
    before = outside_cpu()
    times = bare_engine(engine, voice, sentences)
    return times, max(0.0, outside_cpu() - before)
