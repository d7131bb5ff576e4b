"""eSpeak NG 1.52 through ``espeakng-loader`` (library and data in the wheel, no apt).

Formant synthesis: robotic but tiny and fast, and it brings the dialect dimension (Mandarin ``cmn``
and Cantonese ``yue``) that the neural English engines lack. Debian's 1.51 reads ``cmn`` as pinyin
spelled in English; the wheel's 1.52 does not, so we bind the wheel's library with ctypes.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from ..errors import EngineUnavailable, JobError
from .base import Engine, EngineSpec, Pcm, Voice, package_version

VOICES = (
    Voice("en-us-female", "espeak", "en-us+f3", "en-US", "female", "American English (eSpeak NG)"),
    Voice("en-us-male", "espeak", "en-us+m3", "en-US", "male", "American English (eSpeak NG)"),
    Voice("zh-female", "espeak", "cmn+f3", "cmn", "female", "Mandarin Chinese (eSpeak NG)"),
    Voice("zh-male", "espeak", "cmn+m3", "cmn", "male", "Mandarin Chinese (eSpeak NG)"),
    Voice("yue-female", "espeak", "yue+f3", "yue", "female", "Cantonese (eSpeak NG)"),
    Voice("yue-male", "espeak", "yue+m3", "yue", "male", "Cantonese (eSpeak NG)"),
)

_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_RATE = 1
_DEFAULT_WPM = 175
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakEngine(Engine):
    def __init__(self, lib: Any, sample_rate: int) -> None:
        self._lib = lib
        self.sample_rate = sample_rate
        self._buffer: list[np.ndarray[Any, np.dtype[np.int16]]] = []
        # Kept on the instance: a collected ctypes callback would crash the library.
        self._callback = _CALLBACK(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self._current_voice = ""

    def _on_audio(self, wav: Any, count: int, _events: Any) -> int:
        if count > 0:
            self._buffer.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def synthesize(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Pcm:
        if voice.speaker != self._current_voice:
            if self._lib.espeak_SetVoiceByName(voice.speaker.encode()) != 0:
                raise JobError(f"eSpeak NG has no voice {voice.speaker!r}")
            self._current_voice = voice.speaker
        self._lib.espeak_SetParameter(_RATE, round(_DEFAULT_WPM * speed), 0)
        self._buffer.clear()
        data = text.encode("utf-8")
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise JobError(f"eSpeak NG failed with status {status}")
        if not self._buffer:
            return np.zeros(0, np.float32)
        pcm = np.concatenate(self._buffer)
        self._buffer.clear()
        return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


class EspeakSpec(EngineSpec):
    name = "espeak"
    sample_rate = 22050
    voices = VOICES

    @property
    def version(self) -> str:
        return f"espeakng-loader {package_version('espeakng-loader')}"

    def load(self, *, threads: int, device: str = "cpu") -> Engine:
        try:
            import espeakng_loader

            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (ImportError, OSError, RuntimeError) as exc:
            raise EngineUnavailable(f"eSpeak NG library not available: {exc}") from exc
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if sample_rate <= 0:
            raise EngineUnavailable(f"eSpeak NG failed to initialise with data at {data_path}")
        return EspeakEngine(lib, sample_rate)


SPEC = EspeakSpec()
