"""What one try of a job made, and what the tries of a job keep between them."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import audio
from ..metrics import JobStats
from .model import Job


@dataclass
class Made:
    """A text's samples and how they came about."""

    pcm: audio.Pcm16
    rate: int
    sentences: int = 0
    reused: int = 0
    merged: int = 0
    synthesized: int = 0  # sentences this job had an engine speak
    synthesized_audio: float = 0.0
    # Bytes of the sentences this try has in hand, from the cache, another job's flight or the
    # engine, counted as each arrives (the engine's before the job's own task sees them): what a
    # worker weighs while the text is being made, as joining them copies them all.
    arrived: int = 0
    slot_seconds: float = 0.0
    synthesis_seconds: float = 0.0
    from_cache: bool = False
    marks: tuple[tuple[str, float], ...] = ()
    # Sentences made and not stored yet (by key): held back to go with the text's file, or not
    # stored by an earlier try. Whoever stores the text stores them.
    unstored: dict[str, audio.Pcm16] = field(default_factory=dict)
    # Where each sentence's samples begin in ``pcm`` (by key).
    at: dict[str, int] = field(default_factory=dict)
    # Sentences held back to go with the text (``PieceWriter.close``), each with whether this job
    # holds its cross-process claim: their flights and claims go once they are stored or given up.
    held: dict[str, bool] = field(default_factory=dict)

    def record(self, stats: JobStats, job: Job) -> None:
        with stats.together():
            if self.synthesized:
                stats.synthesized(job.spec.engine, job.spec.voice, self.synthesized_audio)
            if self.sentences:
                stats.sentences(reused=self.reused, made=self.synthesized, merged=self.merged)
            stats.encoded(job.fmt)


@dataclass
class Tries:
    """What the tries of one job share: after a storage fault the next try stores the text an
    earlier one made, rather than making its sentences again; after any fault, it sends live
    listeners only what an earlier try did not (they heard that already)."""

    made: Made | None = None
    making: Made | None = None  # the try under way's, from its first round: ``Made.arrived`` grows
    sent: int = 0  # the master's chunks the reporter took, in order
    ended: bool = False  # the reporter was told the audio's end
