"""eSpeak NG 1.52 through ``espeakng-loader`` (library and data in the wheel, no apt).

Formant synthesis: robotic but tiny and fast, and it brings the dialect dimension (Mandarin ``cmn``
and Cantonese ``yue``) that the neural English engines lack. Debian's 1.51 reads ``cmn`` as pinyin
spelled in English; the wheel's 1.52 does not, so we bind the wheel's library with ctypes.

Lexicon phonemes in eSpeak's own mnemonics (PLS alphabet ``x-espeak``) are spoken through its
``[[...]]`` phoneme input. The same library turns them into IPA for the engines that speak IPA
(Piper, Kokoro): ``to_ipa``.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import numpy as np

from ..errors import EngineUnavailable, JobError
from .base import Engine, EngineSpec, Pcm, Phonemes, Voice, package_version, phoneme_span, segments

VOICES = (
    Voice("en-us-female", "espeak", "en-us+f3", "en-US", "female", "American English (eSpeak NG)"),
    Voice("en-us-male", "espeak", "en-us+m3", "en-US", "male", "American English (eSpeak NG)"),
    Voice("zh-female", "espeak", "cmn+f3", "cmn", "female", "Mandarin Chinese (eSpeak NG)"),
    Voice("zh-male", "espeak", "cmn+m3", "cmn", "male", "Mandarin Chinese (eSpeak NG)"),
    Voice("yue-female", "espeak", "yue+f3", "yue", "female", "Cantonese (eSpeak NG)"),
    Voice("yue-male", "espeak", "yue+m3", "yue", "male", "Cantonese (eSpeak NG)"),
)

ALPHABET = "x-espeak"

_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_PHONEME_INPUT = 0x100  # espeakPHONEMES: read [[...]] as phoneme mnemonics
_TRACE_MNEMONICS, _TRACE_IPA = 0x01, 0x02
_RATE = 1
_DEFAULT_WPM = 175
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Runtime:
    """The library, initialised once per process. Its state (voice, callback, rate) is global, so
    the eSpeak engine and the phoneme conversions of other engines in the same process share it."""

    def __init__(self, lib: Any, sample_rate: int) -> None:
        self._lib = lib
        self.sample_rate = sample_rate
        self._buffer: list[np.ndarray[Any, np.dtype[np.int16]]] = []
        # Kept on the instance: a collected ctypes callback would crash the library.
        self._callback = _CALLBACK(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self._voice = ""
        self._libc = ctypes.CDLL(None)
        self._libc.open_memstream.restype = ctypes.c_void_p
        self._libc.open_memstream.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        self._libc.fclose.argtypes = [ctypes.c_void_p]
        self._libc.free.argtypes = [ctypes.c_void_p]

    def _on_audio(self, wav: Any, count: int, _events: Any) -> int:
        if count > 0:
            self._buffer.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def _use(self, voice: str) -> None:
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise JobError(f"eSpeak NG has no voice {voice!r}")
            self._voice = voice

    def speak(self, text: str, voice: str, *, speed: float) -> Pcm:
        """``text`` with lexicon phonemes (``x-espeak``) said through eSpeak's phoneme input."""
        self._use(voice)
        self._lib.espeak_SetParameter(_RATE, round(_DEFAULT_WPM * speed), 0)
        data, flags = _input(text)
        self._buffer.clear()
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, flags, None, None)
        if status != 0:
            raise JobError(f"eSpeak NG failed with status {status}")
        if not self._buffer:
            return np.zeros(0, np.float32)
        pcm = np.concatenate(self._buffer)
        self._buffer.clear()
        out: Pcm = (pcm.astype(np.float32) / 32768.0).astype(np.float32)
        return out

    def phonemes(self, text: str, voice: str, *, ipa: bool) -> str:
        """The phonemes eSpeak says for ``text`` (lexicon spans included), as mnemonics or IPA:
        its own trace of a synthesis, which is the only way it turns [[...]] input into IPA."""
        self._use(voice)
        data, flags = _input(text)
        out = ctypes.c_void_p()
        size = ctypes.c_size_t()
        stream = self._libc.open_memstream(ctypes.byref(out), ctypes.byref(size))
        if not stream:
            raise JobError("could not open a memory stream for eSpeak NG's phoneme trace")
        try:
            self._lib.espeak_SetPhonemeTrace(_TRACE_IPA if ipa else _TRACE_MNEMONICS, stream)
            try:
                status = self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, flags, None, None)
            finally:
                self._lib.espeak_SetPhonemeTrace(0, None)
                self._buffer.clear()
        finally:
            self._libc.fclose(stream)  # flushes into ``out``
            trace = ctypes.string_at(out.value, size.value).decode("utf-8", "replace") if out.value else ""
            self._libc.free(out.value)
        if status != 0:
            raise JobError(f"eSpeak NG failed with status {status}")
        return " ".join(trace.split())

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (one runtime per process, alive as long)
    def to_ipa(self, mnemonics: str, voice: str) -> str:
        """eSpeak phoneme mnemonics as IPA, read with ``voice``'s phoneme table."""
        return self.phonemes(phoneme_span(ALPHABET, mnemonics), voice, ipa=True)


def _input(text: str) -> tuple[bytes, int]:
    """The text as eSpeak takes it, and the flags to read it with."""
    parts = segments(text)
    if len(parts) == 1 and isinstance(parts[0], str):
        return text.encode("utf-8"), _CHARS_UTF8
    out: list[str] = []
    for part in parts:
        if isinstance(part, Phonemes):
            if part.alphabet != ALPHABET:
                raise JobError(f"eSpeak NG cannot read phonemes in {part.alphabet!r}, only {ALPHABET}")
            out.append(f" [[{part.text}]] ")
        else:
            out.append(part.replace("[[", "[ "))  # only the lexicon's phonemes are phoneme input
    return "".join(out).encode("utf-8"), _CHARS_UTF8 | _PHONEME_INPUT


@functools.cache
def runtime() -> Runtime:
    """This process's eSpeak NG; raises EngineUnavailable when the library cannot load."""
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
    lib.espeak_SetPhonemeTrace.argtypes = [ctypes.c_int, ctypes.c_void_p]
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
    return Runtime(lib, sample_rate)


class EspeakEngine(Engine):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sample_rate = runtime.sample_rate

    def synthesize(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Pcm:
        return self.runtime.speak(text, voice.speaker, speed=speed)


class EspeakSpec(EngineSpec):
    name = "espeak"
    sample_rate = 22050
    voices = VOICES
    alphabets = (ALPHABET,)

    @property
    def version(self) -> str:
        return f"espeakng-loader {package_version('espeakng-loader')}"

    def load(self, *, threads: int, device: str = "cpu") -> Engine:
        return EspeakEngine(runtime())


SPEC = EspeakSpec()
