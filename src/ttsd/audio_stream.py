"""Encoding PCM pieces into one file's bytes as they arrive, for streaming responses.

pcm and wav stream the master's samples unchanged (wav with the "unknown length" header that
streaming WAV players accept), so a stream and the stored file agree sample for sample; at another
rate (pcm_16000, ulaw, alaw) they go through one streaming resampler, so pieces join without a
seam. mp3, ogg and opus go through libsndfile writing into a sink that emits bytes as soon as they
are encoded; mp3 is constant-bitrate here because a stream cannot carry the VBR seek header written
at the end. FLAC records its length up front, so it is not streamed: it is sent whole once encoded.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np

from .audio import FORMATS, AudioFormat, Pcm16, Resampler, encoded_rate, raw

STREAMABLE = frozenset(name for name, fmt in FORMATS.items() if fmt.base != "flac")
_UNKNOWN_SIZE = 0xFFFFFFFF
_MP3_STREAM_QUALITY = 0.5  # libsndfile compression level: about 80 kbit/s CBR at 22-24 kHz


def wav_stream_header(sample_rate: int) -> bytes:
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", _UNKNOWN_SIZE)
        + b"WAVE"
        + b"fmt "
        + fmt
        + b"data"
        + struct.pack("<I", _UNKNOWN_SIZE)
    )


class _Sink(io.RawIOBase):
    """A seekable file for libsndfile whose appended bytes are taken away as they are written.
    Bytes it rewrites behind what was already taken (headers finalised at close) cannot be unsent
    and are dropped; the formats streamed through here stay valid without them."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._taken = 0

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        end = self._pos + len(chunk)
        if end > len(self._buf):
            self._buf.extend(b"\0" * (end - len(self._buf)))
        self._buf[self._pos : end] = chunk
        self._pos = end
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._buf)}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = len(self._buf) if size < 0 else min(len(self._buf), self._pos + size)
        data = bytes(self._buf[self._pos : end])
        self._pos = end
        return data

    def take(self) -> bytes:
        data = bytes(self._buf[self._taken :])
        self._taken = len(self._buf)
        return data


class StreamEncoder:
    def __init__(self, fmt: AudioFormat, sample_rate: int) -> None:
        if fmt.name not in STREAMABLE:
            raise ValueError(f"{fmt.name} cannot be streamed")
        self.fmt = fmt
        self.sample_rate = sample_rate
        self.rate = encoded_rate(fmt, sample_rate)
        self._started = False
        self._file: Any = None
        self._sink: _Sink | None = None
        self._resampler: Resampler | None = None
        if self.rate != sample_rate:
            self._resampler = Resampler(sample_rate, self.rate)
        if fmt.container != "RAW" and fmt.base != "wav":
            import soundfile

            self._sink = _Sink()
            extra = (
                {"bitrate_mode": "CONSTANT", "compression_level": _MP3_STREAM_QUALITY}
                if fmt.name == "mp3"
                else {}
            )
            self._file = soundfile.SoundFile(
                self._sink,
                mode="w",
                samplerate=self.rate,
                channels=1,
                format=fmt.container,
                subtype=fmt.subtype,
                **extra,
            )

    def _resampled(self, pcm: Pcm16, *, last: bool = False) -> Pcm16:
        if self._resampler is None:
            return pcm
        return self._resampler.resample_chunk(pcm, last=last)

    def _samples(self, pcm: Pcm16) -> bytes:
        if self._file is None:
            data = raw(pcm, self.fmt)
            if self.fmt.base == "wav" and not self._started:
                data = wav_stream_header(self.rate) + data
            self._started = True
            return data
        assert self._sink is not None
        if pcm.size:
            self._file.write(pcm)
        return self._sink.take()

    def feed(self, pcm: Pcm16) -> bytes:
        return self._samples(self._resampled(pcm))

    def finish(self) -> bytes:
        data = self._samples(self._resampled(np.zeros(0, np.int16), last=True)) if self._resampler else b""
        if self._file is None:
            # A wav stream of no pieces still needs its header to be a file.
            if not self._started and self.fmt.base == "wav":
                data = wav_stream_header(self.rate) + data
            return data
        self._file.close()
        assert self._sink is not None
        return data + self._sink.take()
