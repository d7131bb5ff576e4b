"""Faults injected into a running distributed deployment under a steady load of hits and misses.

One harness for the chaos tests (``tests/test_chaos.py``, which assert on it) and ``python -m bench
chaos`` (which writes its table): a Redis, a SeaweedFS, two workers with one slot each and two API
processes, all with the default settings. A load balancer is emulated by the load itself: a
request whose API process is gone is sent to the other one (and counted as rerouted).
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from .conftest import unique
from .servers import Server, stop_server
from .stack import Stack, start_stack

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


@dataclass
class Fault:
    name: str
    what: str
    inject: Callable[[Cluster], None]
    heal: Callable[[Cluster], None]
    seconds: float  # how long the fault lasts before it is healed


@dataclass
class FaultResult:
    name: str
    what: str
    requests: int
    accepted: int
    lost: int
    jobs_done: int
    jobs_failed: dict[str, int]
    refused: int  # 503 with Retry-After and a JSON error: clear and retryable
    unclear: int  # anything else that was not an answer (must stay 0)
    rerouted: int
    requeued: float
    given_up: float  # of which given up by a worker whose run ended unfinished
    requeued_after_seconds: float | None  # fault start -> the first job published again
    # Fault start -> every job accepted before it, and unfinished then, finished (None: none was).
    in_flight_seconds: float | None
    # Fault healed -> every job accepted up to then finished (0 when all had finished already).
    backlog_seconds: float | None
    hits: int
    hits_answered: int
    hit_p50_ms: float
    hit_p99_ms: float
    hit_max_ms: float
    regressions: int  # finished tasks seen to change afterwards (must stay 0)
    notes: list[str] = field(default_factory=list)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _poll_final(cluster: Cluster, task_ids: list[str], timeout: float) -> dict[str, dict[str, Any] | None]:
    """Each task's final status (None: never finished within ``timeout``, or unknown)."""
    finals: dict[str, dict[str, Any] | None] = {}
    waiting = set(task_ids)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        api = cluster.live_apis()[0]
        with httpx.Client(base_url=api.url, timeout=10) as client:
            for task_id in list(waiting):
                try:
                    response = client.get(f"/v1/tasks/{task_id}")
                except httpx.TransportError:
                    continue
                if response.status_code == 200 and response.json()["status"] in ("done", "failed"):
                    finals[task_id] = response.json()
                    waiting.discard(task_id)
        if waiting:
            time.sleep(0.5)
    for task_id in waiting:
        finals[task_id] = None
    return finals


def _regressions(cluster: Cluster, finals: dict[str, dict[str, Any] | None]) -> int:
    """Finished tasks whose status changed since (a late worker writing over them)."""
    changed = 0
    api = cluster.live_apis()[0]
    with httpx.Client(base_url=api.url, timeout=10) as client:
        for task_id, final in finals.items():
            if final is None:
                continue
            now = client.get(f"/v1/tasks/{task_id}").json()
            if (now["status"], now.get("audio_id"), now["updated_at"]) != (
                final["status"],
                final.get("audio_id"),
                final["updated_at"],
            ):
                changed += 1
    return changed


def run_fault(cluster: Cluster, fault: Fault, *, before: float = 2.0, after: float = 5.0) -> FaultResult:
    with Load(cluster, HIT_TEXTS) as load:
        time.sleep(before)
        fault.inject(cluster)
        fault_at = time.time()  # in place from here (stopping a server takes a moment)
        time.sleep(fault.seconds)
        fault.heal(cluster)
        healed_at = time.time()
        time.sleep(after)
        load.stop_sending()
        outcomes = load.outcomes
        misses = [o for o in outcomes if o.kind == "miss"]
        hits = [o for o in outcomes if o.kind == "hit"]
        accepted_at = {o.task_id: o.at for o in misses if o.code in (200, 202) and o.task_id}
        accepted_at.update(cluster.planted)
        cluster.planted.clear()
        accepted = list(accepted_at)
        # As first seen finished (during the load when it was), else as polled since.
        finals = {**_poll_final(cluster, accepted, timeout=180), **load.finals}
    time.sleep(1.0)
    regressions = _regressions(cluster, finals)
    done = [f for f in finals.values() if f is not None and f["status"] == "done"]
    failed: dict[str, int] = {}
    for final in finals.values():
        if final is not None and final["status"] == "failed":
            code = final["error"]["code"]
            failed[code] = failed.get(code, 0) + 1
    lost = sum(final is None for final in finals.values())
    ends = {t: f["updated_at"] for t, f in finals.items() if f is not None}
    in_flight = [end for t, end in ends.items() if accepted_at[t] < fault_at < end]
    backlog = [end for t, end in ends.items() if accepted_at[t] <= healed_at]
    during = [o for o in hits if fault_at <= o.at <= healed_at] or hits
    answered = [o.latency * 1000 for o in during if o.code == 200]
    refused = sum(o.code == 503 and o.retry_after and o.error is not None for o in outcomes)
    unclear = sum(o.code not in (200, 202) and not (o.code == 503 and o.retry_after) for o in outcomes)
    return FaultResult(
        name=fault.name,
        what=fault.what,
        requests=len(outcomes),
        accepted=len(accepted),
        lost=lost,
        jobs_done=len(done),
        jobs_failed=failed,
        refused=refused,
        unclear=unclear,
        rerouted=sum(o.rerouted for o in outcomes),
        requeued=load.requeued(),
        given_up=load.requeued("given_up"),
        requeued_after_seconds=None if load.requeued_at is None else load.requeued_at - fault_at,
        in_flight_seconds=max(in_flight) - fault_at if in_flight and not lost else None,
        backlog_seconds=max(0.0, max(backlog) - healed_at) if backlog and not lost else None,
        hits=len(during),
        hits_answered=len(answered),
        hit_p50_ms=_percentile(answered, 0.5),
        hit_p99_ms=_percentile(answered, 0.99),
        hit_max_ms=max(answered, default=float("nan")),
        regressions=regressions,
        notes=sorted({o.error for o in outcomes if o.error}),
    )


# -- the faults --------------------------------------------------------------------------------


def _busy_worker(cluster: Cluster) -> Any:
    """A worker running a long job started for the purpose (found by its lease's token, which
    names the worker's main process)."""
    api = cluster.live_apis()[0]
    # Every sentence new: the same parts planted by an earlier fault come from the cache, and the
    # job ends before this fault strikes it.
    series = time.time_ns() % 10**6
    text = " ".join(f"This is part {i} of long announcement {series}." for i in range(12))
    with httpx.Client(base_url=api.url, timeout=30) as client:
        task_id = client.post("/v1/synthesize", json={"text": text}).json()["task_id"]
        cluster.planted[task_id] = time.time()
        deadline = time.monotonic() + 30
        while client.get(f"/v1/tasks/{task_id}").json()["stage"] != "synthesizing":
            assert time.monotonic() < deadline, "the long job never started"
            time.sleep(0.05)
    token = redis.Redis.from_url(cluster.stack.env["TTSD_REDIS_URL"]).get(f"ttsd:lease:{task_id}")
    assert token is not None, "a running job holds a lease"
    pid = int(token.decode().split("/")[0].split(":")[1])
    [worker] = [w for w in cluster.stack.workers if w.pid == pid]
    return worker


def worker_sigkill() -> Fault:
    def inject(cluster: Cluster) -> None:
        cluster.stack.kill_worker(_busy_worker(cluster))

    def heal(cluster: Cluster) -> None:
        cluster.stack.start_worker(f"w-restarted-{time.monotonic_ns()}")  # as a supervisor would

    return Fault(
        "worker SIGKILL",
        "a busy worker and its engine process killed; restarted 5 s later",
        inject,
        heal,
        5.0,
    )


def worker_sigstop(seconds: float = 60.0) -> Fault:
    victim: dict[str, Any] = {}

    def inject(cluster: Cluster) -> None:
        victim["worker"] = worker = _busy_worker(cluster)
        os.killpg(worker.pid, signal.SIGSTOP)

    def heal(cluster: Cluster) -> None:
        os.killpg(victim["worker"].pid, signal.SIGCONT)

    return Fault(
        "worker SIGSTOP", f"a busy worker frozen for {seconds:g} s, then woken", inject, heal, seconds
    )


def engine_kill() -> Fault:
    def inject(cluster: Cluster) -> None:
        worker = _busy_worker(cluster)
        for child in psutil.Process(worker.pid).children():
            if "resource_tracker" not in " ".join(child.cmdline()):
                child.send_signal(signal.SIGKILL)

    return Fault(
        "engine process killed",
        "the engine process inside a busy worker SIGKILLed",
        inject,
        lambda c: None,
        1.0,
    )


def redis_stop(seconds: float = 10.0) -> Fault:
    return Fault(
        "Redis stopped",
        f"Redis stopped for {seconds:g} s and started again",
        lambda c: c.stack.redis.stop(),
        lambda c: c.stack.redis.start(),
        seconds,
    )


def s3_stop(seconds: float = 20.0) -> Fault:
    return Fault(
        "S3 stopped",
        f"the S3 server killed, started again {seconds:g} s later",
        lambda c: c.stack.s3.kill(),
        lambda c: c.stack.s3.start(),
        seconds,
    )


def api_sigkill() -> Fault:
    def inject(cluster: Cluster) -> None:
        victim = cluster.apis[-1]
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()

    return Fault("API process SIGKILL", "one of two API processes killed", inject, lambda c: None, 1.0)


def faults() -> list[Fault]:
    """In the order they run: the API process killed last, since it is not started again."""
    return [worker_sigkill(), worker_sigstop(), engine_kill(), redis_stop(), s3_stop(), api_sigkill()]


@contextmanager
def cluster(tmp: Path) -> Iterator[Cluster]:
    """Redis, S3, two one-slot workers and two API processes, default settings throughout."""
    stack = start_stack(tmp, workers=2)
    apis: list[Server] = []
    try:
        apis = [stack.server(f"api-{i}") for i in range(2)]
        with httpx.Client(base_url=apis[0].url, timeout=60) as client:
            for text in HIT_TEXTS:  # the texts the load repeats: cached before any fault
                response = client.post("/v1/synthesize", json={"text": text})
                if response.status_code == 202:
                    final = apis[0].wait_task(response.json()["task_id"])
                    assert final["status"] == "done", final
        yield Cluster(stack, apis)
    finally:
        for api in apis:
            if api.process.poll() is None:
                stop_server(api)
        for worker in stack.workers:  # nothing here needs a graceful stop: the data is thrown away
            with suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
        stack.s3.kill()
        stack.stop()


def summary_row(result: FaultResult) -> list[str]:
    failed = ", ".join(f"{n} {code}" for code, n in sorted(result.jobs_failed.items())) or "0"
    requeued = f"{result.requeued:g}"
    if result.requeued_after_seconds is not None:
        given_up = f"{result.given_up:g} given up; " if result.given_up else ""
        requeued += f" ({given_up}first after {result.requeued_after_seconds:.1f} s)"
    in_flight = "none" if result.in_flight_seconds is None else f"{result.in_flight_seconds:.1f} s"
    backlog = "never" if result.backlog_seconds is None else f"{result.backlog_seconds:.1f} s"
    answered = f"{result.hits_answered}/{result.hits}"
    return [
        result.name,
        str(result.requests),
        str(result.accepted),
        str(result.lost),
        failed,
        str(result.refused),
        str(result.unclear),
        str(result.rerouted),
        requeued,
        in_flight,
        backlog,
        answered,
        f"{result.hit_p50_ms:.1f} / {result.hit_p99_ms:.1f} / {result.hit_max_ms:.1f}",
        str(result.regressions),
    ]


HEADER = [
    "fault",
    "requests",
    "accepted",
    "lost",
    "jobs failed",
    "refused (503 + Retry-After)",
    "unclear errors",
    "rerouted",
    "requeued",
    "jobs in flight at the fault all finished after",
    "backlog cleared after healing",
    "hits answered during fault",
    "hit ms P50 / P99 / max",
    "finished tasks changed later",
]
