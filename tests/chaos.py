"""Faults injected into a running distributed deployment under a steady load of hits and misses.

One harness for the chaos tests (``tests/test_chaos.py``, which assert on it) and ``python -m bench
chaos`` (which writes its table): a Redis, a SeaweedFS, two workers with one slot each and two API
processes, all with the default settings. A load balancer is emulated by the load itself: a
request whose API process is gone is sent to the other one (and counted as rerouted).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .chaos_load import HIT_TEXTS, Cluster, Load
from .servers import Server, stop_server
from .stack import start_stack


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
