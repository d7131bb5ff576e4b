"""What a worker node holds: jobs, and the audio of those that made theirs and have not stored it
yet. Bounded by count and by the audio's bytes, so the rest of the queue stays with the broker."""

from __future__ import annotations

import numpy as np

from ..made import Made

# Jobs a node holds at most per slot, at any stage. Only a storage outage fills it: jobs then wait
# for storage with their audio made, so the backlog is stored, not made, once storage is back. 32
# was filled by the chaos suite's 20 s outage, leaving jobs to be made after it (docs/deploy.md).
JOBS_PER_SLOT = 64


def made_bytes(made: Made) -> int:
    """The samples a job that has not stored them keeps: its text's, and its sentences' not stored
    yet where they are not views of the text's."""
    apart = (p.nbytes for p in made.unstored.values() if not np.may_share_memory(p, made.pcm))
    return int(made.pcm.nbytes + sum(apart))


class Holding:
    """The jobs a node holds, counted, and the audio of those past synthesis, weighed against a
    budget per slot (``TTSD_HELD_AUDIO_MB``) until they end. Storing takes moments, so only a
    storage outage fills it: a count alone let 64 long texts a slot take gigabytes then. Not
    thread-safe: the runtime calls it under its lock."""

    def __init__(self, slots: int, budget_mb: int) -> None:
        self._most = slots * JOBS_PER_SLOT
        self._budget = slots * budget_mb * 1024 * 1024
        self._bytes: dict[object, int] = {}
        self.total = 0

    def hold(self, job: object, made: Made) -> None:
        self.release(job)
        self._bytes[job] = size = made_bytes(made)
        self.total += size

    def release(self, job: object) -> None:
        self.total -= self._bytes.pop(job, 0)

    def full(self, jobs: int) -> bool:
        """Whether a node holding ``jobs`` (at any stage) must take no more."""
        return jobs >= self._most or self.total >= self._budget
