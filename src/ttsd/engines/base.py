"""The engine interface.

An engine comes in two halves so the API process never imports a model runtime:

- ``EngineSpec``: cheap facts (name, version, native sample rate, voices). Importable anywhere.
- ``Engine``: the loaded model, made by ``EngineSpec.load`` inside an engine worker process. It
  turns one sentence-sized piece of text into float32 PCM at its native rate.

Sentence splitting, joining, encoding and caching belong to the service, so every engine streams
and none needs to know about formats. Pronunciation lexicons are the service's too: it rewrites a
sentence before the engine gets it, and phonemes arrive inside the text as spans (``segments``).
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ..config import Settings

Pcm = npt.NDArray[np.float32]

# Phonemes inside a sentence: "\x02ALPHABET\x1fPHONEMES\x03". Request text is normalised without
# control characters, so only a lexicon can put a span there: a caller cannot forge one.
_SPAN = re.compile("\x02([^\x1f\x03]*)\x1f([^\x02\x03]*)\x03")


class Phonemes(NamedTuple):
    """Phonemes to say as they are, in a PLS alphabet (``ipa``, ``x-espeak``)."""

    alphabet: str
    text: str


def phoneme_span(alphabet: str, phonemes: str) -> str:
    return f"\x02{alphabet}\x1f{phonemes}\x03"


def segments(text: str) -> list[str | Phonemes]:
    """A sentence as runs of text and the phonemes a lexicon put between them."""
    if "\x02" not in text:
        return [text]
    parts: list[str | Phonemes] = []
    start = 0
    for match in _SPAN.finditer(text):
        if match.start() > start:
            parts.append(text[start : match.start()])
        parts.append(Phonemes(match.group(1), match.group(2)))
        start = match.end()
    if start < len(text):
        parts.append(text[start:])
    return parts


@dataclass(frozen=True)
class Voice:
    """A public voice: a stable name mapped to an engine and that engine's speaker."""

    name: str
    engine: str
    speaker: str
    language: str
    gender: str
    description: str


class Engine(ABC):
    """A loaded engine. One instance per worker process; not thread-safe."""

    sample_rate: int

    @abstractmethod
    def synthesize(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Pcm:
        """Speak one piece of text (a sentence or a clause). May return an empty array."""

    def chunks(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Iterator[Pcm]:
        """The same audio in the pieces the engine makes it in, so a slot can stop between them
        (barge-in); an engine that cannot stream yields it whole."""
        yield self.synthesize(text, voice, speed=speed, seed=seed)


class EngineSpec(ABC):
    name: str
    sample_rate: int
    voices: tuple[Voice, ...]
    # Whether a sentence sounds the same spoken alone as inside its text, so its audio may be
    # cached and reused across texts. True for engines that speak each sentence independently.
    sentence_reuse: bool = True
    # Kinds of device a pool may place this engine on ("cuda" where its runtime can use a GPU).
    device_kinds: tuple[str, ...] = ("cpu",)
    # The PLS phoneme alphabets a lexicon's <phoneme> may use with this engine, which then receives
    # them as ``Phonemes`` spans inside its text; aliases (respellings) work with every engine.
    alphabets: tuple[str, ...] = ()

    def bind(self, settings: Settings) -> EngineSpec:
        """This spec with what it needs from the settings (a weights directory): an engine whose
        spec depends on them returns a configured copy."""
        return self

    @property
    def warm_voices(self) -> tuple[Voice, ...]:
        """The voices an engine process speaks once before it reports ready."""
        return self.voices[:1]

    @property
    @abstractmethod
    def version(self) -> str:
        """Identifies the model's output: part of the cache key, so a new model misses the old cache."""

    @abstractmethod
    def load(self, *, threads: int, device: str = "cpu") -> Engine:
        """Load weights (never from the network) onto ``device`` ("cpu" or "cuda:N", one of
        ``device_kinds``). Raises EngineUnavailable when they are missing or the device cannot
        be used: never a silent fallback to another device."""


@functools.cache
def package_version(dist: str) -> str:
    """Read once per process: the version is part of every cache key, and reading package
    metadata costs more than the rest of a cache hit."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "missing"
