"""Every Redis key ttsd uses, in one place, under one prefix. Each has a TTL or is bounded by the
cache budget, so nothing grows without limit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    prefix: str

    # Cache index: one string per (key, format), expiring with the cache TTL ...
    def entry(self, member: str) -> str:
        return f"{self.prefix}:entry:{member}"

    @property
    def entry_prefix(self) -> str:
        return f"{self.prefix}:entry:"

    # ... and the bookkeeping for the byte budget: members by last access and by expiry, their sizes
    # and the total. Members leave these when evicted or expired (by ``evict``).
    @property
    def lru(self) -> str:
        return f"{self.prefix}:lru"

    @property
    def expiry(self) -> str:
        return f"{self.prefix}:expiry"

    @property
    def sizes(self) -> str:
        return f"{self.prefix}:sizes"

    @property
    def total_bytes(self) -> str:
        return f"{self.prefix}:bytes"

    @property
    def objects(self) -> str:
        """Each member's object name: what eviction deletes once the entry itself has expired."""
        return f"{self.prefix}:objects"

    @property
    def refs(self) -> str:
        """How many entries name each object several entries share (a batch's pieces)."""
        return f"{self.prefix}:refs"

    @property
    def orphans(self) -> str:
        """The bytes of entries gone from an object that others still name: they stay in the
        total until the last of them goes."""
        return f"{self.prefix}:orphans"

    @property
    def evicted(self) -> str:
        """Pub/sub channel: members the index dropped (space-separated), for API processes to forget."""
        return f"{self.prefix}:evicted"

    def task(self, task_id: str) -> str:
        """Task status JSON, TTL = task TTL."""
        return f"{self.prefix}:task:{task_id}"

    def inflight(self, task_id: str) -> str:
        """Single-flight mark while a task is queued or running; TTL covers a redelivery."""
        return f"{self.prefix}:inflight:{task_id}"

    def deliveries(self, task_id: str) -> str:
        """How many times a worker started this task (redeliveries after crashes count)."""
        return f"{self.prefix}:deliveries:{task_id}"

    def pcm(self, task_id: str) -> str:
        """Redis stream of a job's master pieces for the API holding its listeners: kept 5 minutes
        past its last entry for a slow reader, deleted at its end when nobody listened."""
        return f"{self.prefix}:pcm:{task_id}"

    def lease(self, task_id: str) -> str:
        """The token of the delivery that holds a job's lease (``state.redis.leases``)."""
        return f"{self.prefix}:lease:{task_id}"

    @property
    def lease_prefix(self) -> str:
        return f"{self.prefix}:lease:"

    @property
    def leases(self) -> str:
        """Sorted set of leased jobs by deadline (Redis's clock, ms): a lapsed one is handed on."""
        return f"{self.prefix}:leases"

    @property
    def pending(self) -> str:
        """Sorted set of published jobs no worker has taken yet, by publication time."""
        return f"{self.prefix}:pending"

    def job(self, task_id: str) -> str:
        """A pending job's message body, to publish again if the broker lost it."""
        return f"{self.prefix}:job:{task_id}"

    @property
    def sweeper(self) -> str:
        """Held by the one API process sweeping for lost jobs at a time."""
        return f"{self.prefix}:sweeper"

    def listeners(self, task_id: str) -> str:
        """Streaming listeners of a job (a counter); when it drops to zero the job is cancelled..."""
        return f"{self.prefix}:listeners:{task_id}"

    def pinned(self, task_id: str) -> str:
        """... unless a non-streaming request also wants it."""
        return f"{self.prefix}:pinned:{task_id}"

    def cancel(self, task_id: str) -> str:
        """Set when a job should stop; the worker looks between sentences."""
        return f"{self.prefix}:cancel:{task_id}"

    def piece_claim(self, key: str) -> str:
        """Held (a lease its worker renews) while one worker makes a sentence's piece, so other
        workers that need the same sentence wait and reuse it."""
        return f"{self.prefix}:claim:piece:{key}"

    def rate(self, caller: str) -> str:
        """A caller's token bucket (a hash id, never the API key); expires once full again."""
        return f"{self.prefix}:rate:{caller}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    @property
    def workers(self) -> str:
        """Sorted set of engine processes by last heartbeat (readiness, slot count)."""
        return f"{self.prefix}:workers"

    @property
    def busy(self) -> str:
        """Sorted set of engine processes running a job, by start time (busy-slot gauge)."""
        return f"{self.prefix}:busy"

    @property
    def stats(self) -> str:
        """Hash of worker-side counters (syntheses, seconds, failures), exported by the API."""
        return f"{self.prefix}:stats"

    def job_seconds(self, engine: str) -> str:
        """Moving average of a job's duration on an engine, for an honest Retry-After."""
        return f"{self.prefix}:job_seconds:{engine}"


def member(key: str, fmt: str) -> str:
    return f"{key}:{fmt}"


def parse_member(value: bytes | str) -> tuple[str, str]:
    """The (key, format) a ``member`` was made from."""
    text = value.decode() if isinstance(value, bytes) else value
    key, _, fmt = text.rpartition(":")
    return key, fmt
