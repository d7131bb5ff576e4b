"""Lost jobs come back: the API side of distributed mode's recovery.

Once a second, one sweep publishes again the jobs whose lease lapsed (their worker was killed,
frozen or cut off; each lapsed job is handed on by exactly one API process) and the jobs published
but never taken (popped by a worker that stopped before it took the lease, or lost by the broker;
one API process at a time).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from ...config import Settings
from ...errors import BackendUnavailable
from ...state.base import TaskBoard
from ...state.redis.client import redis_errors
from ...state.redis.keys import RedisKeys
from ...state.redis.leases import JobLeases
from .protocol import broker_queue_key

log = logging.getLogger("ttsd.queue")

_SWEEP_SECONDS = 1.0
# A message is taken within milliseconds of leaving the queue: one missing from it this long went
# to a worker that stopped at that instant.
_POPPED_GRACE = 2.0


class Sweeper:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        keys: RedisKeys,
        board: TaskBoard,
        leases: JobLeases,
        publish: Callable[[str, dict[str, Any]], None],
        requeued: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._client = client
        self._keys = keys
        self._board = board
        self._leases = leases
        self._publish = publish
        self._requeued = requeued
        self._engines = settings.engines
        self._clock = clock
        self._gone: dict[str, float] = {}  # pending jobs seen missing from the queue, since when

    async def run(self) -> None:
        resumed = True
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            try:
                if resumed:
                    # Redis was away: no worker could renew its lease either. Give them a beat to
                    # renew before handing on what only looks lapsed.
                    resumed = False
                    await asyncio.sleep(self._settings.job_lease / 2)
                await asyncio.to_thread(self.sweep)
            except BackendUnavailable:
                resumed = True
            except Exception:  # the sweeper must outlive any one bad sweep
                log.exception("sweep failed")

    def sweep(self) -> int:
        """Publish again the jobs whose lease lapsed (their worker is lost), and those published but
        not taken: popped from the queue by a worker that stopped before it took the lease, or
        lost by the broker. Returns how many."""
        republished = 0
        for task_id, given_up in self._leases.sweep():
            republished += self._republish(task_id, "given_up" if given_up else "lease_lapsed")
        now = self._clock()
        with redis_errors():
            if not self._client.set(self._keys.sweeper, b"1", nx=True, px=int(_SWEEP_SECONDS * 900)):
                return republished  # another API process sweeps the pending jobs this second
            found: Any = self._client.zrangebyscore(
                self._keys.pending, "-inf", now - self._settings.job_lease, withscores=True
            )
        waiting = {task_id.decode(): published for task_id, published in found}
        gone = self._popped(waiting) if waiting else set()
        self._gone = {t: self._gone.get(t, now) for t in gone}
        for task_id, published in waiting.items():
            if task_id in gone and now - self._gone[task_id] >= _POPPED_GRACE:
                republished += self._republish(task_id, "popped_not_taken")
            elif published < now - self._settings.requeue_after:
                republished += self._republish(task_id, "never_taken")
        return republished

    def _popped(self, waiting: dict[str, float]) -> set[str]:
        """Of these jobs (published, not taken), those whose message is no longer in the queue."""
        with redis_errors():
            pipe = self._client.pipeline(transaction=False)
            for engine in self._engines:
                pipe.lrange(broker_queue_key(self._settings, engine), 0, -1)
            messages = [m for listed in pipe.execute() for m in listed]
        queued = set()
        for message in messages:
            try:
                queued.add(json.loads(message)["headers"]["id"])
            except (ValueError, KeyError, TypeError):
                continue
        return {task_id for task_id in waiting if task_id not in queued}

    def _republish(self, task_id: str, reason: str) -> int:
        with redis_errors():
            payload: Any = self._client.get(self._keys.job(task_id))
        status = self._board.get(task_id)
        if payload is None or status is None or status.finished:
            with redis_errors():
                self._client.zrem(self._keys.pending, task_id)
            return 0
        log.warning("publishing a job again", extra={"task_id": task_id, "reason": reason})
        with redis_errors():
            self._client.zadd(self._keys.pending, {task_id: self._clock()})
        self._publish(task_id, json.loads(payload))
        self._requeued(reason)
        return 1
