"""PCM assembly and encoding.

Everything is encoded from one int16 master (mono, the engine's native rate), so every format of a
text carries the same samples. soundfile's bundled libsndfile writes wav, flac, ogg-vorbis, ogg-opus
and mp3; opus only takes 8/12/16/24/48 kHz, so it is resampled first (soxr). Phone audio (G.711
μ-law and A-law, 8 kHz) and raw pcm or wav at a chosen rate are formats of their own
(``ulaw``, ``alaw``, ``pcm_16000``, ``wav_8000``…): resampled by soxr from the master, which stays at
the engine's rate, and cached beside the other encodings.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import g711
from .errors import UnknownFormat

Pcm16 = npt.NDArray[np.int16]

_FADE_SECONDS = 0.005
_PAUSE_SECONDS = 0.12
_EMPTY_SECONDS = 0.1
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


# Formats that may be asked for at another rate than the engine's (mp3 for ElevenLabs' names).
_AT_RATES = ("pcm", "wav", "mp3")
# The rates pcm, wav and mp3 may be asked for besides the engine's own (the ones telephony, WebRTC and
# speech APIs use).
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
PHONE_RATE = 8000


@dataclass(frozen=True)
class AudioFormat:
    name: str
    media_type: str
    container: str  # libsndfile major format, or "RAW" for headerless samples
    subtype: str  # PCM_16 (s16le), ULAW, ALAW, or libsndfile's codec
    # The rate every file of this format has; None: the engine's own (opus: the next it takes).
    rate: int | None = None

    @property
    def base(self) -> str:
        """The name without its rate: pcm_16000 -> pcm."""
        return self.name.partition("_")[0]


_BASE = (
    AudioFormat("wav", "audio/wav", "WAV", "PCM_16"),
    AudioFormat("mp3", "audio/mpeg", "MP3", "MPEG_LAYER_III"),
    AudioFormat("ogg", "audio/ogg", "OGG", "VORBIS"),
    AudioFormat("opus", "audio/ogg; codecs=opus", "OGG", "OPUS"),
    AudioFormat("flac", "audio/flac", "FLAC", "PCM_16"),
    AudioFormat("pcm", "audio/pcm", "RAW", "PCM_16"),
    AudioFormat("ulaw", "audio/basic", "RAW", "ULAW", PHONE_RATE),
    AudioFormat("alaw", "audio/x-alaw-basic", "RAW", "ALAW", PHONE_RATE),
)
FORMATS: dict[str, AudioFormat] = {f.name: f for f in _BASE} | {
    f"{f.name}_{rate}": AudioFormat(f"{f.name}_{rate}", f.media_type, f.container, f.subtype, rate)
    for f in _BASE
    if f.name in _AT_RATES
    for rate in SAMPLE_RATES
}
# Names other APIs give the same formats (ElevenLabs' output_format, G.711's own names).
_ALIASES = {"ulaw_8000": "ulaw", "mulaw": "ulaw", "pcmu": "ulaw", "alaw_8000": "alaw", "pcma": "alaw"}
MASTER = FORMATS["flac"]


def get_format(name: str) -> AudioFormat:
    fmt = FORMATS.get(_ALIASES.get(name.lower(), name.lower())) if isinstance(name, str) else None
    if fmt is None:
        raise UnknownFormat(
            f"unknown format {name!r}; valid: {', '.join(_BASE_NAMES)} (pcm, wav and mp3 also as "
            f"pcm_RATE…, RATE one of {', '.join(map(str, SAMPLE_RATES))})",
            details={"valid": list(FORMATS)},
        )
    return fmt


_BASE_NAMES = [f.name for f in _BASE]


def format_at(name: str, sample_rate: int | None) -> AudioFormat:
    """A format and the sample rate asked for beside it (pcm at 16 kHz: ``pcm_16000``)."""
    fmt = get_format(name)
    if sample_rate is None or sample_rate == fmt.rate:
        return fmt
    if fmt.base not in _AT_RATES:
        fixed = f" ({fmt.name} is {fmt.rate} Hz)" if fmt.rate else ""
        raise UnknownFormat(
            f"sample_rate applies to {', '.join(_AT_RATES)}{fixed}; give the format alone",
            details={"valid": list(SAMPLE_RATES)},
        )
    if sample_rate not in SAMPLE_RATES:
        raise UnknownFormat(
            f"sample_rate {sample_rate} is not offered; valid: {', '.join(map(str, SAMPLE_RATES))}",
            details={"valid": list(SAMPLE_RATES)},
        )
    return FORMATS[f"{fmt.base}_{sample_rate}"]


def to_pcm16(samples: npt.NDArray[Any]) -> Pcm16:
    scaled = np.multiply(samples, 32767.0, dtype=np.float32)  # one temporary, then in place
    np.clip(scaled, -32767.0, 32767.0, out=scaled)
    np.rint(scaled, out=scaled)
    pcm: Pcm16 = scaled.astype(np.int16)
    return pcm


@functools.lru_cache(maxsize=16)
def _ramp(n: int) -> npt.NDArray[np.float32]:
    return (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float32))).astype(np.float32)


def fade(samples: npt.NDArray[np.float32], sample_rate: int) -> Pcm16:
    """One sentence as it is cached and joined: short fades at both ends against clicks. Only the
    ends are touched: this runs on the engine slot once per sentence, where a whole-array copy cost
    more than a fast engine's sentence."""
    audio = np.asarray(samples, dtype=np.float32)
    pcm = to_pcm16(audio)
    n = min(int(sample_rate * _FADE_SECONDS), len(audio) // 2)
    if n > 0:
        ramp = _ramp(n)
        pcm[:n] = to_pcm16(audio[:n] * ramp)
        pcm[-n:] = to_pcm16(audio[-n:] * ramp[::-1])
    return pcm


def pause(sample_rate: int, speed: float) -> Pcm16:
    """The silence between two sentences (slower speech, longer pause)."""
    return np.zeros(int(sample_rate * _PAUSE_SECONDS / speed), np.int16)


class Joiner:
    """Sentences onto the wire one at a time, in order: a pause before each but the first that has
    sound, or the silence a document put there instead (``pauses``, seconds before each sentence,
    None for the usual pause: SSML breaks), then ``tail`` seconds after the last. The master is the
    concatenation of exactly what it gives, so a stream and the stored file agree."""

    def __init__(
        self, sample_rate: int, speed: float, pauses: Sequence[float | None] | None = None, tail: float = 0.0
    ) -> None:
        self._rate = sample_rate
        self._gap = pause(sample_rate, speed)
        self._pauses = pauses
        self._tail = tail
        self._sounded = False
        self.samples = 0  # on the wire so far
        self.starts: list[int] = []  # where each sentence's wire audio (its pause first) begins
        self.at: list[int] = []  # where each sentence's own samples begin (after its pause)

    def add(self, pcm: Pcm16) -> Pcm16 | None:
        """The next sentence's wire audio (None: nothing to send)."""
        explicit = self._pauses[len(self.starts)] if self._pauses is not None else None
        if explicit is not None:
            head = np.zeros(int(self._rate * explicit), np.int16)
        else:
            head = self._gap if self._sounded and pcm.size else self._gap[:0]
        self.starts.append(self.samples)
        self.at.append(self.samples + len(head))
        self._sounded = self._sounded or bool(pcm.size)
        out = np.concatenate([head, pcm]) if head.size else pcm
        self.samples += len(out)
        return out if out.size else None

    def end(self) -> Pcm16 | None:
        """The silence after the last sentence, if the document asked for one."""
        if self._tail <= 0:
            return None
        self.starts.append(self.samples)
        return np.zeros(int(self._rate * self._tail), np.int16)


def joined(
    pieces: list[Pcm16],
    sample_rate: int,
    speed: float,
    pauses: Sequence[float | None] | None = None,
    tail: float = 0.0,
) -> list[Pcm16]:
    """All the sentences as ``Joiner`` puts them on the wire."""
    joiner = Joiner(sample_rate, speed, pauses, tail)
    out = [wire for wire in (joiner.add(pcm) for pcm in pieces) if wire is not None]
    end = joiner.end()
    return [*out, end] if end is not None else out


def finish(pieces: list[Pcm16], sample_rate: int) -> Pcm16:
    """The master: all pieces joined; a text that produced no sound becomes a short silence so every
    format still has a valid, playable file."""
    total = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
    if total.size == 0:
        return np.zeros(int(sample_rate * _EMPTY_SECONDS), np.int16)
    return total


def resample(pcm: Pcm16, rate: int, target: int) -> Pcm16:
    """The whole of ``pcm`` through the streaming resampler a stream uses, so a streamed format
    and its stored file carry the same samples."""
    if rate == target:
        return pcm
    return Resampler(rate, target).resample_chunk(pcm, last=True)


class Resampler:
    """soxr's streaming resampler, in float32, whose output does not depend on how its input was
    cut. soxr's int16 output does (its samples moved by 1 or 2 with the cuts): a live stream fed
    sentence by sentence and the same text's stored file differed in about 40 % of their samples,
    and so did their G.711 codes."""

    def __init__(self, rate: int, target: int) -> None:
        import soxr

        self._stream = soxr.ResampleStream(rate, target, 1, dtype="float32")

    def resample_chunk(self, pcm: Pcm16, *, last: bool = False) -> Pcm16:
        # By 32768 both ways (not ``to_pcm16``'s 32767 for engines' floats): int16 to float32 and
        # back is then exact, and only the resampling moves a sample.
        out = self._stream.resample_chunk(pcm.astype(np.float32) / 32768, last=last)
        samples: Pcm16 = np.clip(np.rint(out * 32768), -32768, 32767).astype(np.int16)
        return samples


def encoded_rate(fmt: AudioFormat, sample_rate: int) -> int:
    if fmt.rate is not None:
        return fmt.rate
    if fmt.subtype == "OPUS" and sample_rate not in _OPUS_RATES:
        return next((r for r in _OPUS_RATES if r >= sample_rate), 48000)
    return sample_rate


def raw(pcm: Pcm16, fmt: AudioFormat) -> bytes:
    """Headerless samples, already at the format's rate: s16le, or G.711 codes."""
    if fmt.subtype == "ULAW":
        return g711.ulaw(pcm)
    if fmt.subtype == "ALAW":
        return g711.alaw(pcm)
    return pcm.astype("<i2").tobytes()


def encode(pcm: Pcm16, sample_rate: int, fmt: AudioFormat) -> bytes:
    rate = encoded_rate(fmt, sample_rate)
    pcm = resample(pcm, sample_rate, rate)
    if fmt.container == "RAW":
        return raw(pcm, fmt)
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, pcm, rate, format=fmt.container, subtype=fmt.subtype)
    return buf.getvalue()


def holds_samples(fmt: AudioFormat, sample_rate: int) -> bool:
    """Whether a file of ``fmt`` holds a master at ``sample_rate``'s samples unchanged."""
    same_rate = encoded_rate(fmt, sample_rate) == sample_rate
    return same_rate and fmt.subtype == "PCM_16" and fmt.container in ("RAW", "WAV")  # not flac


def samples_at(data: bytes, fmt: AudioFormat, sample_rate: int) -> int | None:
    """Where the master's samples begin in ``data``, its encoding in ``fmt``, when they are there
    unchanged (s16le at the master's rate: pcm and wav); else None. The pieces of a text spoken
    once are ranges of its file (``jobs.pieces.keep_text``)."""
    if not holds_samples(fmt, sample_rate):
        return None
    if fmt.container == "RAW":
        return 0
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    at = 12
    while at + 8 <= len(data):
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        if data[at : at + 4] == b"data":
            return at + 8
        at += 8 + size + (size & 1)
    return None


def decode(data: bytes) -> tuple[Pcm16, int]:
    """Decode a self-describing file (the master) to int16 samples and their rate."""
    import soundfile

    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=False)
    return np.asarray(samples, dtype=np.int16), int(rate)
