"""What a job is (a Job), what an engine slot is asked (a SentenceBatch) and answers (a
BatchResult), what a finished job gives (a JobOutcome), and where it reports (a Reporter)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..audio import Pcm16
from ..errors import TtsdError
from ..keys import SynthesisSpec
from ..state.base import CacheEntry, Stage, Status, TaskStatus
from ..text import split_sentences


@dataclass(frozen=True)
class Layout:
    """How an SSML document's sentences are said and joined (plain text has none): each one's
    speed ratio to the job's, the silence before each (None: the usual pause) and after the last,
    and its marks (name, the sentence it precedes, seconds into the silence before that one)."""

    rates: tuple[float, ...]
    pauses: tuple[float | None, ...]
    tail: float = 0.0
    marks: tuple[tuple[str, int, float], ...] = ()
    # Elements spoken as their content only: said in the response, not part of any identity.
    ignored: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Layout:
        return cls(
            rates=tuple(data["rates"]),
            pauses=tuple(data["pauses"]),
            tail=float(data.get("tail", 0.0)),
            marks=tuple((str(n), int(i), float(s)) for n, i, s in data.get("marks", ())),
            ignored=tuple(data.get("ignored", ())),
        )


@dataclass(frozen=True)
class Job:
    task_id: str
    spec: SynthesisSpec
    fmt: str
    # Each sentence of the text as its engine is to say it, when lexicons apply (else None: the
    # text's own sentences). Given by the API with the job, so workers need no lexicons and cannot
    # disagree about them; a job the API prepares has ``rewrite`` instead. Both follow from the
    # spec (which holds the lexicons' hashes), so neither is part of a job's identity.
    spoken: tuple[str, ...] | None = field(default=None, compare=False)
    # The request's pronunciation lexicons (``Applied.speak``), run the first time the sentences
    # are needed: on the way to an engine, never for a cache hit.
    rewrite: Callable[[Sequence[str]], tuple[str, ...]] | None = field(
        default=None, compare=False, repr=False
    )
    # Spoken live (``spoken`` is how a live session cut it, not how the text splits): its master is
    # kept, so any other format of it is an encode, never a synthesis of sentences cut otherwise.
    live: bool = field(default=False, compare=False)
    # When its audio is needed (``time.monotonic()`` in the process that queues it): engine slots
    # go to the earliest first. None: as soon as it queues (first come, first served).
    deadline: float | None = field(default=None, compare=False)
    # An SSML document's rates, breaks and marks (its key covers what changes the samples).
    layout: Layout | None = field(default=None, compare=False)

    @functools.cached_property
    def key(self) -> str:
        return self.spec.key

    @functools.cached_property
    def sentences(self) -> tuple[str, ...]:
        """What the engine says, sentence by sentence (lexicons applied)."""
        if self.spoken is not None:
            return self.spoken
        own = tuple(split_sentences(self.spec.text))
        return own if self.rewrite is None else self.rewrite(own)

    @property
    def speeds(self) -> tuple[float, ...] | None:
        """Each sentence's own speed, when a document gives them different ones."""
        if self.layout is None:
            return None
        return tuple(round(self.spec.speed * rate, 3) for rate in self.layout.rates)

    def queued(self) -> TaskStatus:
        """This job's status as it enters the queue."""
        now = time.time()
        return TaskStatus(
            task_id=self.task_id,
            status=Status.QUEUED,
            stage=Stage.QUEUED,
            key=self.key,
            format=self.fmt,
            created_at=now,
            updated_at=now,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the Celery message."""
        data: dict[str, Any] = {"task_id": self.task_id, "fmt": self.fmt, "spec": asdict(self.spec)}
        if self.spoken is not None or self.rewrite is not None:
            data["spoken"] = list(self.sentences)
        if self.live:
            data["live"] = True
        if self.layout is not None:
            data["layout"] = self.layout.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        spoken = data.get("spoken")
        return cls(
            task_id=data["task_id"],
            fmt=data["fmt"],
            spec=SynthesisSpec(**data["spec"]),
            spoken=tuple(spoken) if spoken is not None else None,
            live=bool(data.get("live", False)),
            layout=Layout.from_dict(data["layout"]) if data.get("layout") else None,
        )


@dataclass(frozen=True)
class SentenceBatch:
    """What an engine slot is asked to do: speak these sentences of one text (``spec`` names the
    engine, voice, speed and seed), in order. ``indices`` are the sentences' places in the text,
    echoed back with each result."""

    request_id: str
    spec: SynthesisSpec
    indices: tuple[int, ...]
    sentences: tuple[str, ...]
    deadline: float | None = None  # the job's (``Job.deadline``)
    speeds: tuple[float, ...] | None = None  # each sentence's own speed (SSML prosody), else spec's


@dataclass(frozen=True)
class BatchResult:
    slot_seconds: float  # wall time the batch held its slot
    synthesis_seconds: float  # of which the engine was speaking


# (index in the text, faded int16 samples, sample rate): one sentence as the engine spoke it.
SentenceCallback = Callable[[int, Pcm16, int], None]


@dataclass(frozen=True)
class Piece:
    """A sentence of a master as it is made: int16 mono samples at the engine's rate."""

    pcm: Pcm16
    sample_rate: int


@dataclass(frozen=True)
class JobOutcome:
    entry: CacheEntry
    synthesized: bool  # True when an engine spoke at least one of the text's sentences
    audio_seconds: float
    synthesis_seconds: float  # engine time inside the slots, summed over this job's sentences
    # Wall time this job held engine slots (queueing excluded): what it cost the scarce device.
    slot_seconds: float = 0.0
    sentences: int = 0
    # Sentences taken from the piece cache, and those another job was already making (merged).
    sentences_reused: int = 0
    sentences_merged: int = 0
    # Objects the job evicted to keep the byte budget: the API forgets them at once.
    evicted: tuple[str, ...] = ()
    # Its SSML marks, by name, with their offsets in the audio (seconds).
    marks: tuple[tuple[str, float], ...] = ()


class Reporter(Protocol):
    """Where a job reports progress: the task board, and the audio to live listeners."""

    @property
    def status(self) -> TaskStatus:
        """The task's status as last reported."""

    async def stage(self, stage: Stage, progress: int, **changes: Any) -> None: ...

    async def audio(self, pcm: Pcm16, sample_rate: int) -> None:
        """The next sentence of the master as it will be stored (pause included), in order, as
        soon as it is known: cached ones at once, the rest as the engine speaks them. Raises
        JobCancelled when every listener of a streamed job has gone, so the engine stops."""

    async def audio_end(self) -> None:
        """Every sentence was sent and the text is stored (not called when its master came from
        the cache whole)."""

    async def failed(self, error: TtsdError) -> None:
        """The job failed: live listeners hear why (its final status follows through ``stage``)."""


# Each new measurement moves an average by this share of its difference from it.
EWMA_WEIGHT = 0.2


@dataclass
class MovingAverage:
    """An exponentially weighted moving average of seconds (None until one was measured)."""

    seconds: float | None = None

    def observe(self, seconds: float) -> None:
        if self.seconds is None:
            self.seconds = seconds
        else:
            self.seconds += EWMA_WEIGHT * (seconds - self.seconds)
