"""The worker node's side of the job leases, in Celery's main process."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from celery.worker import state as celery_state

from ...config import Settings
from ...errors import BackendUnavailable
from ...state.redis.client import connect
from ...state.redis.keys import RedisKeys
from ...state.redis.leases import JobLeases
from .protocol import lease_token, mark_ttl

log = logging.getLogger("ttsd.worker")


class LeaseKeeper:
    """The worker node's side of the leases, in Celery's main process: a lease is taken when a job
    is received (so a job waiting in Celery's buffer is covered too) and renewed every fifth of
    ``TTSD_JOB_LEASE`` while Celery holds the request or the node's runtime runs its job. When
    both have let go of a job that did not finish (the run gave up on Redis), the lease is given
    up at once. When the whole worker dies or freezes, nothing renews and the lease lapses by
    itself."""

    def __init__(
        self,
        settings: Settings,
        node: str,
        reserved: Callable[[], Iterable[Any]] = lambda: celery_state.reserved_requests,
        running: Callable[[], Iterable[tuple[str, str]]] = lambda: (),
    ) -> None:
        self._settings = settings
        self._node = node
        self._reserved = reserved  # the requests Celery holds (received, or being handed over)
        self._running = running  # (task id, lease token) of the jobs the runtime runs
        # (task id, token) -> whether the lease was taken (Redis may have been away at receipt).
        self._held: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()
        self._leases: JobLeases | None = None
        self._stop = threading.Event()

    @property
    def leases(self) -> JobLeases:
        if self._leases is None:
            keys = RedisKeys(self._settings.redis_prefix)
            self._leases = JobLeases(
                connect(self._settings), keys, self._settings.job_lease, mark_ttl(self._settings)
            )
        return self._leases

    def _token(self, request: Any) -> str:
        args = request.args or [{}]
        return lease_token(self._node, args[0] if isinstance(args[0], dict) else {})

    def received(self, request: Any, **_: Any) -> None:
        """In the consumer's thread, before the request is handed to a process."""
        held = (request.id, self._token(request))
        try:
            taken = self.leases.acquire(*held) is not None
        except BackendUnavailable:
            taken = False  # taken at the next beat, or by the engine process when it starts the job
        with self._lock:
            self._held[held] = taken

    def start(self, **_: Any) -> None:
        threading.Thread(target=self._run, name="ttsd-leases", daemon=True).start()

    def stop(self, **_: Any) -> None:
        """Warm shutdown: jobs still held and not finished are handed on now."""
        self._stop.set()
        with self._lock:
            held, self._held = list(self._held), {}
        with contextlib.suppress(BackendUnavailable):
            self.leases.renew_all([], held)

    def _requests(self) -> set[tuple[str, str]]:
        while True:
            try:  # Celery's consumer thread changes this set as we read it
                reserved = {(r.id, self._token(r)) for r in list(self._reserved())}
                break
            except RuntimeError:
                continue
        # Read after Celery's: a job is in the runtime before Celery lets go of it.
        return reserved | set(self._running())

    def _renew(self) -> None:
        live = self._requests()
        with self._lock:
            held = list(self._held.items())
        renew = [h for h, taken in held if taken and h in live]
        # Let go: a finished run released the lease already (a no-op); an unfinished one is handed
        # on at the next sweep.
        lapse = [h for h, _ in held if h not in live]
        try:
            renewed = self.leases.renew_all(renew, lapse)
        except BackendUnavailable:
            return  # all kept, and tried again at the next beat
        # Lost (handed on while this worker was away: never taken back), or let go.
        gone = [h for h, held_still in zip(renew, renewed, strict=True) if not held_still] + lapse
        for task_id, token in (h for h, taken in held if not taken and h in live):
            try:
                if self.leases.acquire(task_id, token) is not None:
                    with self._lock:
                        self._held[(task_id, token)] = True
                else:
                    gone.append((task_id, token))  # another delivery holds it: its process drops it
            except BackendUnavailable:
                continue  # kept, and tried again at the next beat
        with self._lock:
            for h in gone:
                self._held.pop(h, None)

    def _run(self) -> None:
        interval = self._settings.job_lease / 5
        while not self._stop.wait(interval):
            try:
                self._renew()
            except Exception:  # the keeper must outlive any one bad beat
                log.exception("lease renewal failed")
