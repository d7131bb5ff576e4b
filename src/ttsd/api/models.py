"""Request and response bodies of the HTTP API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..lexicons import MAX_PER_REQUEST
from ..prepare import SynthesisRequest
from ..state.base import Mark, Stage, Status, TaskError

_STRICT = ConfigDict(strict=True, extra="forbid")

LexiconNames = Annotated[
    list[Annotated[str, Field(max_length=64)]] | None,
    Field(
        None,
        max_length=MAX_PER_REQUEST,
        description="Pronunciation lexicons (GET /v1/lexicons) to apply, first wins; those of "
        "another language are skipped, TTSD_DEFAULT_LEXICONS follow",
    ),
]


def _names(lexicons: list[str] | None) -> tuple[str, ...]:
    return tuple(lexicons) if lexicons else ()


SampleRate = Annotated[
    int | None,
    Field(
        None,
        description="pcm and wav at this rate (8000, 16000, 22050, 24000, 44100, 48000) instead of the "
        "voice's own; resampled from the master (ulaw and alaw are 8000)",
    ),
]
_FORMATS = "wav, mp3, ogg, opus, flac, pcm (s16le), ulaw or alaw (G.711, 8 kHz); pcm_RATE, wav_RATE"
TextType = Annotated[
    Literal["text", "ssml"] | None,
    Field(None, description="text, or ssml (an SSML <speak> document); unset: SSML when it is one"),
]


class SynthesizeBody(BaseModel):
    model_config = _STRICT

    text: str = Field(description="Text to speak (normalised: NFC, whitespace collapsed)")
    voice: str | None = Field(None, description="A voice name from /v1/voices, or an OpenAI voice name")
    language: str | None = Field(
        None, description="Language tag (en-US, cmn, yue); picks a voice if none given"
    )
    format: str = Field("wav", description=_FORMATS)
    sample_rate: SampleRate
    text_type: TextType
    speed: float = Field(1.0, ge=0.5, le=2.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Fixes the noise of engines that take one")
    lexicons: LexiconNames

    def to_request(self) -> SynthesisRequest:
        return SynthesisRequest(
            self.text,
            self.voice,
            self.language,
            self.format,
            self.speed,
            self.seed,
            _names(self.lexicons),
            sample_rate=self.sample_rate,
            text_type=self.text_type,
        )


class SpeechBody(BaseModel):
    """OpenAI's /v1/audio/speech request. Unknown fields are ignored, as OpenAI clients send extras."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str = "tts-1"
    input: str
    voice: str | None = None
    response_format: str = Field("mp3", description=_FORMATS)
    sample_rate: SampleRate
    text_type: TextType
    speed: float = Field(1.0, ge=0.5, le=2.0)
    stream_format: Literal["audio", "sse"] = Field(
        "audio", description="audio: the file's bytes, streamed as made; sse: base64 deltas as events"
    )
    lexicons: LexiconNames

    def to_request(self) -> SynthesisRequest:
        return SynthesisRequest(
            text=self.input,
            voice=self.voice,
            format=self.response_format,
            speed=self.speed,
            lexicons=_names(self.lexicons),
            sample_rate=self.sample_rate,
            text_type=self.text_type,
        )


class StreamRequest(SynthesizeBody):
    """One request on the /v1/stream WebSocket: a synthesis request whose audio is pcm unless told."""

    format: str = "pcm"


class Done(BaseModel):
    status: Literal["done"] = "done"
    key: str
    format: str
    url: str
    cached: bool = True
    duration: float
    # Set when the text was assembled just now from cached sentences, without an engine (its task
    # stays pollable like any other).
    task_id: str | None = None
    sentences: int | None = None
    sentences_reused: int | None = None
    # SSML elements spoken as their content only (see the README's SSML section).
    ssml_ignored: list[str] | None = None
    # An SSML document's marks, with their offsets in the audio (seconds).
    marks: list[Mark] | None = None


class QueuedResponse(BaseModel):
    status: Status
    task_id: str
    status_url: str
    key: str
    merged: bool
    # The text's sentences, and how many of them the piece cache already holds.
    sentences: int | None = None
    sentences_reused: int | None = None
    ssml_ignored: list[str] | None = None


class TaskResponse(BaseModel):
    task_id: str
    status: Status
    stage: Stage
    progress: int
    key: str
    format: str
    url: str | None = None
    error: TaskError | None = None
    sentences: int | None = None
    sentences_reused: int | None = None
    # An SSML document's marks, with their offsets in the audio (seconds), once done.
    marks: list[Mark] | None = None
    created_at: float
    updated_at: float


class VoiceInfo(BaseModel):
    name: str
    language: str
    gender: str
    engine: str
    sample_rate: int
    description: str
    aliases: list[str]
    default: bool
    # Whether the voice's engine has a live slot now (else requests for it get 503).
    ready: bool = True
    # Where its engine runs: the engine's state ("ready", "loading", "failed to load: ...").
    engine_state: str = "ready"


class VoicesResponse(BaseModel):
    voices: list[VoiceInfo]
    languages: list[str]
    formats: list[str]
    default: str
    # Engines by state, as /readyz reports them.
    engines: dict[str, str] = {}


class LexiconInfo(BaseModel):
    name: str
    language: str
    entries: int = Field(description="lexemes")
    graphemes: int
    hash: str = Field(description="content hash, part of the cache key of every text it applies to")
    alphabets: list[str] = Field(description="phoneme alphabets its <phoneme> entries use")
    default: bool = Field(description="in TTSD_DEFAULT_LEXICONS: applied to every request of its language")
    engines: list[str] = Field(description="engines of its language that can say every lexeme")
    unsupported: dict[str, str] = Field(description="engines of its language that cannot, and why")


class LexiconsResponse(BaseModel):
    lexicons: list[LexiconInfo]
    # Which phoneme alphabets each engine reads (aliases work with every engine).
    alphabets: dict[str, list[str]]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody
