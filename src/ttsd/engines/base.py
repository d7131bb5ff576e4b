"""The engine interface.

An engine comes in two halves so the API process never imports a model runtime:

- ``EngineSpec``: cheap facts (name, version, native sample rate, voices). Importable anywhere.
- ``Engine``: the loaded model, made by ``EngineSpec.load`` inside an engine worker process. It
  turns one sentence-sized piece of text into float32 PCM at its native rate.

Sentence splitting, joining, encoding and caching belong to the service, so every engine streams
and none needs to know about formats.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ..config import Settings

Pcm = npt.NDArray[np.float32]


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


class EngineSpec(ABC):
    name: str
    sample_rate: int
    voices: tuple[Voice, ...]
    # Whether a sentence sounds the same spoken alone as inside its text, so its audio may be
    # cached and reused across texts. True for engines that speak each sentence independently.
    sentence_reuse: bool = True
    # Kinds of device a pool may place this engine on ("cuda" where its runtime can use a GPU).
    device_kinds: tuple[str, ...] = ("cpu",)

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
