"""``python -m bench soak``: a day of a support line's traffic, compressed, on one embedded ttsd.

The traffic (``bench/soak_traffic.py``): Zipf over tens of thousands of replies of 1 to 4
sentences, 58 % repeats, English on Piper ``en-joe`` and Mandarin on eSpeak ``zh-female``, mp3 and
wav, Poisson arrivals with a burst every period, through ``POST /v1/synthesize``. The cache budget
(``TTSD_CACHE_MAX_BYTES``) is far below what the run's replies take, so it evicts all along. Every
accepted task is polled to its end; at half time the server is stopped (SIGTERM, which drains
what it accepted) and a new one started on the same data directory, which must answer earlier
texts from its index. Sampled every few seconds: jobs and hits per second, hit latency, the API
process's RSS (its engine processes apart), the data directory's size, ``GET /v1/stats``.

``BENCH_SOAK_SECONDS`` (600), ``BENCH_SOAK_RATE`` (requests/s between bursts, 1.5) and
``BENCH_SOAK_BUDGET_MB`` (32 for 600 s, scaled to the run, 8 at least) size it. Writes
``bench/results/soak.{json,md,png}``. The suite runs the short form (``Config.short()``,
``tests/test_soak.py``) and checks what must hold whatever the machine: nothing accepted lost, disk
within the budget, hits after the restart, RSS under 400 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import soak_report, soak_watch
from .common import ttsd_process
from .soak_traffic import Request, Traffic, traffic

RSS_LIMIT_MB = 400.0
POLL_SECONDS = 0.5
DRAIN_SECONDS = 180.0  # after the last arrival, for the accepted tasks still queued to finish


@dataclass(frozen=True)
class Config:
    seconds: float = 600.0
    rate: float = 1.5  # requests/s between bursts: about half of what 2 shared cores keep up with
    catalogue: int = 30_000
    budget_bytes: int = 32 * 2**20
    sample_seconds: float = 5.0
    burst_every: float = 60.0  # also the length of the windows compared for flatness
    burst_seconds: float = 5.0
    burst_factor: float = 4.0
    slots: int = 2
    seed: int = 2025

    @property
    def slack_bytes(self) -> int:
        # Beyond the budget, which counts audio only: the SQLite index and its WAL (which grows to
        # ~4 MB between checkpoints and keeps that size), and the files of the jobs being stored,
        # which eviction only makes room for once they are indexed.
        return 6 * 2**20 + max(2**20, self.budget_bytes // 10)

    @classmethod
    def full(cls) -> Config:
        seconds = float(os.environ.get("BENCH_SOAK_SECONDS", "600"))
        budget_mb = max(8.0, 32 * seconds / 600)
        return cls(
            seconds=seconds,
            rate=float(os.environ.get("BENCH_SOAK_RATE", "1.5")),
            # Scaled to the run, so even a short trial fills it (and evicts) well before half time.
            budget_bytes=int(float(os.environ.get("BENCH_SOAK_BUDGET_MB", budget_mb)) * 2**20),
            # Six periods at least, so a short trial still has a burst in each window it compares.
            burst_every=min(60.0, seconds / 6),
            sample_seconds=min(5.0, seconds / 30),
        )

    @classmethod
    def short(cls) -> Config:
        """The suite's form: under a minute of load, a small catalogue and budget, one restart."""
        return cls(seconds=48, rate=1.2, catalogue=3_000, budget_bytes=6 * 2**20, sample_seconds=2.0,
                   burst_every=12.0, burst_seconds=3.0)  # fmt: skip


@dataclass
class Pending:
    request: Request
    accepted_at: float
    generation: int


class Soak:
    """The client side of the run: sends, polls, restarts; counts everything the report needs."""

    def __init__(self, config: Config, data_dir: Path) -> None:
        self.config, self.data_dir = config, data_dir
        self.url: str | None = None  # None while the server is down: arrivals then are not sent
        self.process: subprocess.Popen[bytes] | None = None
        self.process_url = ""
        self.generation = 0
        self.t0 = time.monotonic()
        self.pending: dict[str, Pending] = {}
        self.settled = asyncio.Event()  # set whenever no accepted task is open
        self.sends: set[asyncio.Task[None]] = set()
        self.recent_done: deque[Request] = deque(maxlen=8)
        self.counts: dict[str, int] = dict.fromkeys(soak_report.COUNTS, 0)
        self.failures: list[dict[str, Any]] = []
        self.answers: list[tuple[float, str]] = []  # (time, hit/assembled/accepted/merged/shed/error)
        self.hits: list[tuple[float, float]] = []  # (time, latency) of exact hits
        self.assembled: list[tuple[float, float]] = []  # 200s built from cached sentences
        self.done: list[tuple[float, float]] = []  # (time, accept-to-done seconds)
        self.samples: list[dict[str, Any]] = []
        self.file_sizes: dict[str, int] = {}  # every file seen in the data dir
        self.restart: dict[str, Any] = {}
        self.rss: dict[str, float] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def send(self, client: httpx.AsyncClient, request: Request) -> None:
        url = self.url
        if url is None:
            self.counts["not_sent_down"] += 1
            return
        started = time.perf_counter()
        try:
            response = await client.post(f"{url}/v1/synthesize", json=request.body())
        except httpx.HTTPError:
            self.counts["transport_errors"] += 1
            return
        latency, now = time.perf_counter() - started, self.now()
        self.counts["sent"] += 1
        kind = "error"
        if response.status_code == 200:
            kind = "assembled" if "sentences" in response.json() else "hit"
            (self.assembled if kind == "assembled" else self.hits).append((now, latency))
        elif response.status_code == 202:
            # A task id is the cache key's: an evicted text asked again gets its old id, on a new job.
            task_id = response.json()["task_id"]
            kind = "merged" if task_id in self.pending else "accepted"
            self.counts[kind] += 1
            self.pending.setdefault(task_id, Pending(request, now, self.generation))
        elif response.status_code == 503:
            kind = "shed"
            self.counts["shed_503"] += 1
            self.counts["shed_without_retry_after"] += "retry-after" not in response.headers
        else:
            self.counts["other_errors"] += 1
            self.failures.append({"status": response.status_code, "body": response.text[:200]})
        self.answers.append((now, kind))

    def resolve(self, task_id: str, outcome: str, detail: Any = None) -> None:
        pending = self.pending.pop(task_id)
        if not self.pending:
            self.settled.set()
        if outcome == "done":
            self.done.append((self.now(), self.now() - pending.accepted_at))
            self.recent_done.append(pending.request)
            return
        self.counts[outcome] += 1
        self.failures.append({"outcome": outcome, "task_id": task_id, "detail": detail})

    async def poll(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        limit = asyncio.Semaphore(8)

        async def one(url: str, task_id: str) -> None:
            async with limit:
                try:
                    response = await client.get(f"{url}/v1/tasks/{task_id}")
                except httpx.HTTPError:
                    return  # the server is going down: the restart settles these tasks
            if task_id not in self.pending or self.url != url:
                return
            if response.status_code == 404:
                self.resolve(task_id, "unknown", "404 from the server that accepted it")
            elif response.status_code == 200:
                body = response.json()
                if body["status"] == "done":
                    self.resolve(task_id, "done")
                elif body["status"] == "failed":
                    self.resolve(task_id, "failed", body.get("error"))

        while not stop.is_set():
            url, generation = self.url, self.generation
            ids = [t for t, p in self.pending.items() if p.generation == generation]
            if url is not None and ids:
                await asyncio.gather(*(one(url, t) for t in ids))
            await asyncio.sleep(POLL_SECONDS)

    def env(self) -> dict[str, str]:
        return {
            "TTSD_ENGINES": "piper,espeak",
            "TTSD_ENGINE_SLOTS": str(self.config.slots),
            "TTSD_CACHE_MAX_BYTES": str(self.config.budget_bytes),
            # The jobs' "job done" events tell, after the stop, which tasks its drain finished.
            "TTSD_LOG_LEVEL": "INFO",
            "TTSD_LOG_FORMAT": "json",
        }

    def log_of(self, url: str) -> dict[str, list[str]]:
        return soak_watch.server_log(self.data_dir.parent / f"ttsd-{url.rsplit(':', 1)[1]}.log")

    async def start(self, stack: contextlib.ExitStack) -> str:
        url, process = await asyncio.to_thread(stack.enter_context, ttsd_process(self.data_dir, **self.env()))
        self.process, self.process_url, self.generation = process, str(url), self.generation + 1
        return str(url)

    async def restart_server(self, client: httpx.AsyncClient, stack: contextlib.ExitStack) -> None:
        """SIGTERM (the old server drains what it accepted), a new one on the same data dir; then
        every task still open at the stop, and the last texts done before it, are asked again."""
        assert self.process is not None
        began, old_url = self.now(), self.process_url
        self.url = None
        await asyncio.gather(*self.sends)
        open_at_stop = [(t, p.request) for t, p in self.pending.items()]
        earlier = list(self.recent_done)
        self.process.terminate()
        code = await asyncio.to_thread(self.process.wait, 150)
        logged = self.log_of(old_url)
        finished = set(logged["done"]) & {t for t, _ in open_at_stop}
        # Asked before the traffic resumes, so no new job's files can evict theirs first. A task
        # the drain finished may still be gone from the cache: the drain's later jobs evict too.
        url = await self.start(stack)
        self.rss["restart_start_mb"] = soak_watch.memory(self.process.pid)[0]

        async def hit(request: Request) -> bool:
            response = await client.post(f"{url}/v1/synthesize", json=request.body())
            return response.status_code == 200 and "sentences" not in response.json()

        cached = 0
        for task_id, request in open_at_stop:
            found = await hit(request)
            cached += found
            if task_id in finished or found:
                self.resolve(task_id, "done")
            else:
                self.resolve(task_id, "lost_at_restart", "not logged done by the old server, not cached")
        earlier_hits = sum([await hit(request) for request in earlier])
        self.url = url
        self.restart = {
            "at_s": began, "down_s": self.now() - began, "old_exit_code": code,
            "open_at_stop": len(open_at_stop), "open_logged_done": len(finished),
            "open_cached_after": cached, "earlier_asked": len(earlier), "earlier_hits": earlier_hits,
            "old_server_errors": logged["errors"][:20],
        }  # fmt: skip

    async def run(self, load: Traffic) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        stop = asyncio.Event()
        with contextlib.ExitStack() as stack:
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                self.url = await self.start(stack)
                self.rss["start_mb"] = soak_watch.memory(self.process.pid if self.process else None)[0]
                self.t0 = time.monotonic()
                background = [asyncio.create_task(self.poll(client, stop)),
                              asyncio.create_task(soak_watch.sample(self, client, stop))]  # fmt: skip
                restart: asyncio.Task[None] | None = None
                for at, request in load.schedule:
                    await asyncio.sleep(max(0.0, at - self.now()))
                    if restart is None and at >= self.config.seconds / 2:
                        restart = asyncio.create_task(self.restart_server(client, stack))
                    task = asyncio.create_task(self.send(client, request))
                    self.sends.add(task)
                    task.add_done_callback(self.sends.discard)
                await asyncio.gather(*self.sends, *([restart] if restart else []))
                pid = self.process.pid if self.process else None
                self.rss["end_of_load_mb"] = soak_watch.memory(pid)[0]
                if self.pending:
                    self.settled.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.settled.wait(), DRAIN_SECONDS)
                await asyncio.sleep(5)  # idle: what the API process holds with no work
                self.rss["idle_after_mb"] = soak_watch.memory(pid)[0]
                stop.set()
                await asyncio.gather(*background)
            for task_id in list(self.pending):
                self.resolve(task_id, "unresolved", f"not done {DRAIN_SECONDS:g} s after the load")
        self.restart["new_server_errors"] = self.log_of(self.process_url)["errors"][:20]


def soak(config: Config, work: Path) -> dict[str, Any]:
    """Run the soak against a fresh data directory under ``work``; the result, with its checks."""
    load = traffic(config.seconds, config.rate, catalogue_size=config.catalogue,
                   burst_every=config.burst_every, burst_seconds=config.burst_seconds,
                   burst_factor=config.burst_factor, seed=config.seed)  # fmt: skip
    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    state = Soak(config, data_dir)
    asyncio.run(state.run(load))
    return soak_report.summarise(dataclasses.asdict(config), config.slack_bytes, load, state, RSS_LIMIT_MB)


def run() -> dict[str, Any]:
    config = Config.full()
    with tempfile.TemporaryDirectory(prefix="ttsd-soak-") as tmp:
        result = soak(config, Path(tmp))
    soak_report.publish_soak(result)
    return result
