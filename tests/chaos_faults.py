"""The faults the chaos harness (``tests/chaos.py``) injects into a deployment, each with how it
heals: a worker killed or frozen, an engine process killed, Redis or object storage stopped, an
API process killed."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx
import psutil
import redis

from .chaos import Fault
from .chaos_load import Cluster


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
