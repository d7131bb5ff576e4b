"""What a live session is told and tells, typed: the protocols on the wire (ttsd's own, and
ElevenLabs' stream-input) translate their messages into these commands and these events into
their messages, so the session itself speaks no protocol."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TtsdError


@dataclass(frozen=True, slots=True)
class ContextConfig:
    """How a context speaks: fixed when it opens (its first message)."""

    voice: str | None = None
    language: str | None = None
    format: str = "pcm"
    sample_rate: int | None = None
    speed: float = 1.0
    seed: int | None = None
    lexicons: tuple[str, ...] = ()


# -- commands ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Speak:
    """Text for a context (any size, down to a token); opens it with ``config`` if it is new.
    ``phrase``: the text is a whole sentence or phrase (ElevenLabs' auto_mode), spoken as it is
    rather than waiting for what follows it."""

    context: str
    text: str
    config: ContextConfig | None = None
    phrase: bool = False
    # A whole SSML document (each message one): its sentences, rates, breaks and marks.
    ssml: bool = False


@dataclass(frozen=True, slots=True)
class Flush:
    """Speak what the context has buffered now, complete sentence or not."""

    context: str


@dataclass(frozen=True, slots=True)
class End:
    """No more text: speak the rest, then ``Done``. ``flushed_only``: ElevenLabs' close_context,
    which keeps only what was flushed before it and cancels the rest."""

    context: str
    flushed_only: bool = False


@dataclass(frozen=True, slots=True)
class Cancel:
    """Barge-in: nothing more of this context is sent; its work is dropped."""

    context: str


@dataclass(frozen=True, slots=True)
class CloseSocket:
    """Every context ends as with ``End(flushed_only=True)``; the socket closes once they are done."""

    context: None = None


Command = Speak | Flush | End | Cancel | CloseSocket


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SentenceStarted:
    """Sent before a sentence's audio: where it starts in the context's audio, in samples of the
    output rate (the pause before it included in what came before)."""

    context: str
    index: int
    text: str
    offset: int
    sample_rate: int
    cached: bool
    marks: tuple[str, ...] = ()  # SSML marks just before it: their offset is its offset


@dataclass(frozen=True, slots=True)
class Audio:
    context: str
    sentence: int
    data: bytes
    # The sentence's span within this chunk (seconds from the chunk's start, seconds long), on the
    # chunk that begins it: what ttsd knows of its timing, for protocols that ask for alignment.
    span: tuple[float, float] | None = None
    text: str = ""


@dataclass(frozen=True, slots=True)
class Flushed:
    context: str


@dataclass(frozen=True, slots=True)
class Done:
    """Every sentence was sent. ``key``: the whole text's cache key once it is stored (so the same
    text over HTTP is a hit), None when it could not be (a sentence failed, or reuse is off)."""

    context: str
    key: str | None
    sentences: int
    audio_seconds: float
    cancelled: int = 0  # sentences dropped by an ElevenLabs close_context


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The acknowledgement of a cancel: nothing of the context follows it."""

    context: str


@dataclass(frozen=True, slots=True)
class Failed:
    """An error about one message or one sentence (``context`` may be None); the socket stays open
    unless ``fatal`` (authentication, too many contexts)."""

    context: str | None
    error: TtsdError
    sentence: int | None = None
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class Closing:
    """Not sent: the writer closes the socket with ``code`` once everything before it is out."""

    code: int
    context: None = None


Event = SentenceStarted | Audio | Flushed | Done | Cancelled | Failed | Closing


@dataclass
class Tally:
    """What a context has sent, for its Done."""

    sentences: int = 0
    native_samples: int = 0
    spoken: list[str] = field(default_factory=list)
