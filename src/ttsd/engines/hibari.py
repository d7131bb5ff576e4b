"""hibari: a small neural English engine shipping the ``heart`` voice."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EngineUnavailable
from .base import Engine, EngineSpec, Pcm, Voice, package_version

VOICES = (
    Voice("en-heart", "hibari", "heart", "en-US", "female", "Heart, American English (hibari, neural)"),
)


class HibariEngine(Engine):
    sample_rate = 24000

    def __init__(self, model: Any) -> None:
        self._model = model

    def synthesize(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Pcm:
        return np.asarray(self._model(text, speed=speed, seed=seed), dtype=np.float32)


class HibariSpec(EngineSpec):
    name = "hibari"
    sample_rate = 24000
    voices = VOICES

    @property
    def version(self) -> str:
        return f"hibari-tts {package_version('hibari-tts')}"

    def load(self, *, threads: int, device: str = "cpu") -> Engine:
        try:
            from hibari import Hibari
        except ImportError as exc:
            raise EngineUnavailable(f"hibari is not installed: {exc}") from exc
        # Only the bundled voice: any other would be downloaded on first use.
        return HibariEngine(Hibari(voice="heart", threads=threads))


SPEC = HibariSpec()
