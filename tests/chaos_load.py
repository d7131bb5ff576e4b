"""The chaos harness's load (``tests/chaos.py``): hits and misses sent at a steady rate to a
deployment's API processes, a request whose process is gone sent to the other one (a load balancer,
emulated), and every answer and finished task recorded."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from .conftest import unique
from .servers import Server
from .stack import Stack

HIT_TEXTS = [f"Thank you for calling, this is reply number {i}." for i in range(6)]
HITS_PER_SECOND = 20.0
MISSES_PER_SECOND = 2.0


@dataclass
class Outcome:
    kind: str  # hit or miss
    at: float  # wall clock when sent
    latency: float
    code: int  # 0: no API process answered
    error: str | None = None
    retry_after: bool = False
    task_id: str | None = None
    rerouted: bool = False


@dataclass
class Cluster:
    stack: Stack
    apis: list[Server]
    # Jobs a fault started on purpose before striking (accepted before it, counted with the load's).
    planted: dict[str, float] = field(default_factory=dict)

    def live_apis(self) -> list[Server]:
        return [api for api in self.apis if api.process.poll() is None]


# Why a job is published again after a fault (``jobs.distributed.sweeper``).
FAULT_REQUEUES = ("lease_lapsed", "given_up", "never_taken", "popped_not_taken")


class Load:
    """Hits and misses at steady rates, round robin over the API processes (a request whose API
    process is gone goes to the next one)."""

    def __init__(self, cluster: Cluster, hit_texts: list[str]) -> None:
        self._cluster = cluster
        self._hit_texts = hit_texts
        self._stop = threading.Event()  # the load
        self._closed = threading.Event()  # the watcher, which runs on until the jobs are counted
        self.outcomes: list[Outcome] = []
        # Each accepted job's status as first seen finished, while the fault is still on: what
        # a worker waking late must not change.
        self.finals: dict[str, dict[str, Any]] = {}
        # Jobs published again (lease lapsed or given up) before the load, counted in Redis (any
        # API process reports them all), and when it first happened: how soon a lost worker's jobs
        # were back in the queue.
        self._requeued_before = {
            reason: max((self._requeued(api, reason) for api in cluster.live_apis()), default=0.0)
            for reason in (None, "given_up")
        }
        self.requeued_at: float | None = None
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._loop, args=("hit", HITS_PER_SECOND), daemon=True),
            threading.Thread(target=self._loop, args=("miss", MISSES_PER_SECOND), daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop_sending(self) -> None:
        self._stop.set()
        for thread in self._threads[:2]:
            thread.join()

    def __exit__(self, *_: Any) -> None:
        self.stop_sending()
        self._closed.set()
        self._threads[2].join()

    def _loop(self, kind: str, rate: float) -> None:
        clients: dict[str, httpx.Client] = {}
        turn = itertools.count()
        texts = itertools.cycle(self._hit_texts)
        interval = 1.0 / rate
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                if kind == "hit":
                    body = {"text": next(texts)}
                else:
                    body = {"text": unique("A new reply, made while something failed. Thank you.")}
                outcome = self._send(kind, body, clients, next(turn))
                with self._lock:
                    self.outcomes.append(outcome)
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            for client in clients.values():
                client.close()

    @staticmethod
    def _requeued(api: Server, reason: str | None = None) -> float:
        """For ``reason``, or for every fault (a job a busy worker gave back for an idle one is
        not one)."""
        reasons = FAULT_REQUEUES if reason is None else (reason,)
        try:
            return sum(api.metric("ttsd_jobs_requeued_total", reason=r) for r in reasons)
        except httpx.TransportError:
            return 0.0

    def requeued(self, reason: str | None = None) -> float:
        """Jobs published again since the load began (for ``reason``), as any API process alive
        reports them (one that cannot be reached reports none)."""
        now = max((self._requeued(api, reason) for api in self._cluster.live_apis()), default=0.0)
        return max(0.0, now - self._requeued_before[reason])

    def _watch(self) -> None:
        while not self._closed.wait(0.5):
            if self.requeued_at is None and self.requeued() > 0:
                self.requeued_at = time.time()
            with self._lock:
                open_tasks = [
                    o.task_id
                    for o in self.outcomes
                    if o.task_id and o.kind == "miss" and o.task_id not in self.finals
                ]
            apis = self._cluster.live_apis()
            if not open_tasks or not apis:
                continue
            try:
                with httpx.Client(base_url=apis[0].url, timeout=5) as client:
                    for task_id in open_tasks:
                        status = client.get(f"/v1/tasks/{task_id}")
                        if status.status_code == 200 and status.json()["status"] in ("done", "failed"):
                            self.finals[task_id] = status.json()
            except httpx.TransportError:
                continue  # that API process is gone or Redis is away: the next round tries again

    def _send(self, kind: str, body: dict[str, Any], clients: dict[str, httpx.Client], turn: int) -> Outcome:
        at, started = time.time(), time.monotonic()
        apis = self._cluster.apis  # a balancer without health checks: dead ones are tried too
        order = apis[turn % len(apis) :] + apis[: turn % len(apis)]
        for attempt, api in enumerate(order):
            client = clients.get(api.url)
            if client is None:
                client = clients[api.url] = httpx.Client(base_url=api.url, timeout=30)
            try:
                response = client.post("/v1/synthesize", json=body)
            except httpx.TransportError:
                continue  # the balancer sends it to the next API process
            latency = time.monotonic() - started
            error = task_id = None
            try:
                data = response.json()
            except ValueError:
                data = {}
            if response.status_code >= 400:
                error = (data.get("error") or {}).get("code") or f"http_{response.status_code}"
            else:
                task_id = data.get("task_id")
            return Outcome(
                kind,
                at,
                latency,
                response.status_code,
                error,
                "retry-after" in response.headers,
                task_id,
                rerouted=attempt > 0,
            )
        return Outcome(kind, at, time.monotonic() - started, 0, "unreachable", rerouted=True)
