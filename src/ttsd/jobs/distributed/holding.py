"""What a worker node holds: jobs, and the audio of those that made theirs and have not stored it
yet. Bounded by count and by the audio's bytes, so the rest of the queue stays with the broker."""

from __future__ import annotations

import numpy as np

from ...state.base import Stage
from ..made import Made, Tries

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
    """The jobs a node holds, counted, and the audio of those past their first sentence, weighed
    against a budget per slot (``TTSD_HELD_AUDIO_MB``) until they end: while being made, by the
    sentences that have arrived (read live); once made, by what they keep. Storing takes moments,
    so only a storage outage fills it: a count alone let 64 long texts a slot take gigabytes then.
    Not thread-safe: the runtime calls it under its lock."""

    def __init__(self, slots: int, budget_mb: int) -> None:
        self._most = slots * JOBS_PER_SLOT
        self._budget = slots * budget_mb * 1024 * 1024
        self._bytes: dict[object, int] = {}
        self._making: dict[object, Made] = {}

    def weigh(self, job: object, tries: Tries, stage: Stage) -> None:
        """A job as it reports ``stage``: an engine faster than the worker's loop ends several
        jobs before the first reports it encodes, so each is weighed from its first sentence."""
        if stage is Stage.ENCODING and tries.made is not None:
            self.hold(job, tries.made)
        elif stage is Stage.SYNTHESIZING and tries.making is not None:
            self.release(job)
            self._making[job] = tries.making

    def hold(self, job: object, made: Made) -> None:
        self.release(job)
        self._bytes[job] = made_bytes(made)

    def release(self, job: object) -> None:
        self._bytes.pop(job, None)
        self._making.pop(job, None)

    @property
    def total(self) -> int:
        return sum(self._bytes.values()) + sum(m.arrived for m in self._making.values())

    def full(self, jobs: int) -> bool:
        """Whether a node holding ``jobs`` (at any stage) must take no more."""
        return jobs >= self._most or self.total >= self._budget
