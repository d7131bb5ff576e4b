"""Which engine slots are alive and busy, by pool: heartbeats in Redis."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from .client import guarded, redis_errors
from .keys import RedisKeys


class HeartbeatClock:
    """This host's wall time for reading heartbeats, with a forward step of the clock (a virtual
    machine resumed, an NTP step) forgiven until every worker has beaten since. Beats stamped
    before the step read as that much older: without this every worker would look dead at once,
    and each API would refuse every job until the next beats."""

    _STEP = 1.0  # wall time moving this much more than monotonic time is a step, not drift

    def __init__(self, forgive_for: float) -> None:
        self._forgive_for = forgive_for
        self._offset = time.time() - time.monotonic()
        self._stepped = 0.0
        self._until = 0.0

    def now(self) -> float:
        wall, monotonic = time.time(), time.monotonic()
        offset = wall - monotonic
        if offset - self._offset > self._STEP:
            self._stepped += offset - self._offset
            self._until = monotonic + self._forgive_for
        elif monotonic > self._until:
            self._stepped = 0.0
        self._offset = offset
        return wall - self._stepped


class WorkerRegistry:
    """Worker nodes announce their engine slots (loaded, or being replaced) with a heartbeat, one
    member per slot under their pool's name; the API reads which pools (so which engines) have
    live slots, how many, and how many are speaking."""

    HEARTBEAT_SECONDS = 10.0
    STALE_SECONDS = 35.0

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._r = client
        self._k = keys
        # Every worker beats within a heartbeat (and a little) of a step.
        self._clock = HeartbeatClock(forgive_for=self.HEARTBEAT_SECONDS * 1.5)

    @staticmethod
    def member(pool: str, node: str) -> str:
        return f"{pool}|{node}"

    @staticmethod
    def _slots(name: str, slots: int) -> list[str]:
        return [f"{name}#{i}" for i in range(slots)]

    def beat(self, name: str, slots: int) -> None:
        pipe = self._r.pipeline(transaction=False)
        pipe.zadd(self._k.workers, dict.fromkeys(self._slots(name, slots), time.time()))
        # Pruned by the forgiving clock: after a step, the others have not beaten since.
        pipe.zremrangebyscore(self._k.workers, "-inf", self._clock.now() - self.STALE_SECONDS)
        pipe.execute()

    def leave(self, name: str, slots: int) -> None:
        with redis_errors():
            members = self._slots(name, slots)
            pipe = self._r.pipeline(transaction=False)
            pipe.zrem(self._k.workers, *members)
            pipe.zrem(self._k.busy, *members)
            pipe.execute()

    def set_busy(self, name: str, busy: int, slots: int) -> None:
        """``busy`` of the node's ``slots`` are speaking now."""
        members = self._slots(name, slots)
        with redis_errors():
            pipe = self._r.pipeline(transaction=False)
            if busy:
                pipe.zadd(self._k.busy, dict.fromkeys(members[:busy], time.time()))
            if busy < slots:
                pipe.zrem(self._k.busy, *members[busy:])
            pipe.execute()

    @staticmethod
    def _by_pool(members: Any) -> dict[str, int]:
        counts: dict[str, int] = {}
        for raw in members:
            pool = raw.decode().partition("|")[0]
            counts[pool] = counts.get(pool, 0) + 1
        return counts

    @guarded
    def busy_by_pool(self, within: float) -> dict[str, int]:
        """Slots busy since less than ``within`` seconds ago and still busy (a node that died with
        busy slots drops out after that long), by pool."""
        return self._by_pool(self._r.zrangebyscore(self._k.busy, self._clock.now() - within, "+inf"))

    @guarded
    def alive_by_pool(self) -> dict[str, int]:
        live = self._r.zrangebyscore(self._k.workers, self._clock.now() - self.STALE_SECONDS, "+inf")
        return self._by_pool(live)

    def idle_elsewhere(self, name: str, within: float, queues: Sequence[str] = ()) -> int:
        """Live slots of node ``name``'s pool on other nodes, not speaking (busy as in
        ``busy_by_pool``), less the jobs waiting in the broker lists ``queues``: those slots'
        nodes take them. (Busy is written a few times a second, so with a fast engine a node
        between two jobs reads as idle: two nodes each holding back for the other, with a backlog
        waiting, left their slots idle a third of the time.)"""
        pool, mine = name.split("|", 1)[0] + "|", name + "#"
        now = self._clock.now()
        with redis_errors():
            pipe = self._r.pipeline(transaction=False)
            pipe.zrangebyscore(self._k.workers, now - self.STALE_SECONDS, "+inf")
            pipe.zrangebyscore(self._k.busy, now - within, "+inf")
            for queue in queues:
                pipe.llen(queue)
            alive, busy, *waiting = pipe.execute()

        def others(members: Any) -> set[str]:
            return {m for m in (b.decode() for b in members) if m.startswith(pool) and not m.startswith(mine)}

        return max(0, len(others(alive) - others(busy)) - sum(int(n) for n in waiting))

    def alive(self) -> int:
        return sum(self.alive_by_pool().values())
