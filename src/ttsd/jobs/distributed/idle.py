"""Work left to idle workers: a worker whose slots all speak asks the broker for no more while
another worker of its pool has a slot idle (``WorkerRuntime.accept``), and gives back a job that
waits on it while another is idle.

A worker takes its next job while its slots all speak, so that each slot has its next job at hand
when it frees: under load that keeps the slots busy. Under light load it can leave a job waiting
behind a long text on one worker while another worker frees first, and the broker gave the job to
whichever worker had asked for one first. So a job that has waited here for a slot for half a
second, while every slot here speaks and another worker of the pool has one idle, is given back:
its run is cancelled before any of its audio was streamed (what it claimed is let go, as for a
caller who hangs up), its lease is released without counting a delivery, and it is published
again. The idle worker takes it: this one asks the broker for no more while another is idle
(``WorkerRuntime.accept``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...config import Settings
from ...errors import BackendUnavailable
from ...pools import PoolSpec
from ...state.redis.leases import JobLeases
from ...state.redis.registry import WorkerRegistry
from .protocol import broker_queue_key
from .reporter import RedisReporter

log = logging.getLogger("ttsd.worker")

Held = tuple[str, str]  # (task id, lease token)

RECHECK = 0.1
_EVERY = 0.25
# A job that has waited less stays: the slot it waits for may be about to free.
_AFTER = 0.5


class IdleElsewhere:
    """Whether another live worker of this one's pool has a slot idle that the jobs waiting in the
    broker for the pool's engines would not fill: one pipelined read of the registry and the
    broker's lists. "None" is remembered for ``RECHECK``: under full load every job would read it."""

    def __init__(self, registry: WorkerRegistry, name: str, settings: Settings, pool: PoolSpec) -> None:
        self._registry = registry
        self._name = name
        self._within = settings.job_timeout + 60  # how long a slot may speak one job
        self._queues = [broker_queue_key(settings, engine) for engine in pool.engines]
        self._none_until = 0.0

    def __call__(self) -> bool:
        if time.monotonic() < self._none_until:
            return False
        try:
            idle = self._registry.idle_elsewhere(self._name, self._within, self._queues) > 0
        except BackendUnavailable:
            idle = False  # unknown: take the next job, as a worker alone would
        if not idle:
            self._none_until = time.monotonic() + RECHECK
        return idle


@dataclass
class _Run:
    since: float
    task: asyncio.Task[Any]
    reporter: RedisReporter


class HandBack:
    """On the worker's event loop: the jobs running here, and the loop that gives one whose batch
    waits for a slot back when another worker is idle."""

    def __init__(
        self,
        leases: JobLeases,
        publish: Callable[[str, dict[str, Any]], None],
        full: Callable[[], bool],
        unspoken: Callable[[str], bool],
        idle_elsewhere: Callable[[], bool],
        given_back: Callable[[], None],
    ) -> None:
        self._leases = leases
        self._publish = publish
        self._full = full  # every slot here speaks
        self._unspoken = unspoken  # a job's batch waits for a slot here (``EnginePool.unspoken``)
        self._idle_elsewhere = idle_elsewhere
        self._given_back = given_back  # counted, as requeues are
        self._runs: dict[Held, _Run] = {}
        self._giving: set[Held] = set()

    def begun(self, held: Held, reporter: RedisReporter) -> None:
        """In the job's own task, once its delivery began."""
        task = asyncio.current_task()
        assert task is not None
        self._runs[held] = _Run(time.monotonic(), task, reporter)

    def ended(self, held: Held) -> None:
        self._runs.pop(held, None)

    def giving(self, held: Held) -> bool:
        """Whether the job's run was cancelled to give it back."""
        return held in self._giving

    async def run(self) -> None:
        while True:
            await asyncio.sleep(_EVERY)
            try:
                await self._check()
            except Exception:  # the check must outlive any one bad beat
                log.exception("hand-back check failed")

    async def _check(self) -> None:
        """Gives back the job that has waited longest, when one is due: one a check, since the
        idle worker it goes to is idle no more."""
        now = time.monotonic()
        # Not one whose cached opening was streamed already: its next delivery has the same number
        # (``JobLeases.hand_back``), so a listener could not tell its repeat from what comes next.
        due = [
            (w.since, held)
            for held, w in self._runs.items()
            if now - w.since >= _AFTER and not w.reporter.streamed and self._unspoken(held[0])
        ]
        if not due or not self._full() or not await asyncio.to_thread(self._idle_elsewhere):
            return
        held = min(due)[1]
        run = self._runs.get(held)
        if run is not None and self._unspoken(held[0]):  # unless it ended or began meanwhile
            del self._runs[held]
            self._giving.add(held)
            run.task.cancel()

    async def give_back(self, held: Held, payload: dict[str, Any]) -> None:
        """In the job's task, once its run was cancelled. Redis or the broker away: the lease
        lapses or the pending sweep publishes it, as for a lost worker."""
        self._giving.discard(held)
        task_id, token = held
        try:
            if not await asyncio.to_thread(self._leases.hand_back, task_id, token):
                return  # handed on meanwhile
            await asyncio.to_thread(self._publish, task_id, payload)
        except BackendUnavailable as exc:
            log.warning(
                "could not give a job back: its lease hands it on",
                extra={"task_id": task_id, "error": str(exc)},
            )
            return
        log.info("job given back for an idle worker", extra={"task_id": task_id})
        with contextlib.suppress(BackendUnavailable):
            await asyncio.to_thread(self._given_back)
