"""PCM assembly and encoding.

Everything is encoded from one int16 master (mono, the engine's native rate), so every format of a
text carries the same samples. soundfile's bundled libsndfile writes wav, flac, ogg-vorbis, ogg-opus
and mp3; opus only takes 8/12/16/24/48 kHz, so it is resampled first (soxr).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import UnknownFormat

Pcm16 = npt.NDArray[np.int16]

_FADE_SECONDS = 0.005
_PAUSE_SECONDS = 0.12
_EMPTY_SECONDS = 0.1
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


@dataclass(frozen=True)
class AudioFormat:
    name: str
    media_type: str
    container: str  # libsndfile major format, or "RAW" for headerless s16le
    subtype: str


FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat("wav", "audio/wav", "WAV", "PCM_16"),
        AudioFormat("mp3", "audio/mpeg", "MP3", "MPEG_LAYER_III"),
        AudioFormat("ogg", "audio/ogg", "OGG", "VORBIS"),
        AudioFormat("opus", "audio/ogg; codecs=opus", "OGG", "OPUS"),
        AudioFormat("flac", "audio/flac", "FLAC", "PCM_16"),
        AudioFormat("pcm", "audio/pcm", "RAW", "PCM_16"),
    )
}
MASTER = FORMATS["flac"]


def get_format(name: str) -> AudioFormat:
    fmt = FORMATS.get(name.lower()) if isinstance(name, str) else None
    if fmt is None:
        raise UnknownFormat(
            f"unknown format {name!r}; valid: {', '.join(FORMATS)}", details={"valid": list(FORMATS)}
        )
    return fmt


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


def joined(pieces: list[Pcm16], sample_rate: int, speed: float) -> list[Pcm16]:
    """The sentences as they go on the wire: a pause before each but the first that has sound.
    The master is the concatenation of exactly these, so a stream and the stored file agree."""
    out: list[Pcm16] = []
    gap = pause(sample_rate, speed)
    for pcm in pieces:
        if pcm.size:
            out.append(np.concatenate([gap, pcm]) if out else pcm)
    return out


def finish(pieces: list[Pcm16], sample_rate: int) -> Pcm16:
    """The master: all pieces joined; a text that produced no sound becomes a short silence so every
    format still has a valid, playable file."""
    total = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
    if total.size == 0:
        return np.zeros(int(sample_rate * _EMPTY_SECONDS), np.int16)
    return total


def _resample(pcm: Pcm16, rate: int, target: int) -> Pcm16:
    if rate == target:
        return pcm
    import soxr

    return np.asarray(soxr.resample(pcm, rate, target), dtype=np.int16)


def encoded_rate(fmt: AudioFormat, sample_rate: int) -> int:
    if fmt.subtype == "OPUS" and sample_rate not in _OPUS_RATES:
        return next((r for r in _OPUS_RATES if r >= sample_rate), 48000)
    return sample_rate


def encode(pcm: Pcm16, sample_rate: int, fmt: AudioFormat) -> bytes:
    if fmt.container == "RAW":
        return pcm.astype("<i2").tobytes()
    import soundfile

    rate = encoded_rate(fmt, sample_rate)
    buf = io.BytesIO()
    soundfile.write(buf, _resample(pcm, sample_rate, rate), rate, format=fmt.container, subtype=fmt.subtype)
    return buf.getvalue()


def decode(data: bytes) -> tuple[Pcm16, int]:
    """Decode a self-describing file (the master) to int16 samples and their rate."""
    import soundfile

    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=False)
    return np.asarray(samples, dtype=np.int16), int(rate)
