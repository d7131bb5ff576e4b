from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from ttsd import audio


def tone(seconds: float, rate: int) -> audio.Pcm16:
    t = np.arange(int(seconds * rate)) / rate
    return audio.to_pcm16(0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32))


@pytest.mark.parametrize("rate", [22050, 24000])
@pytest.mark.parametrize("name", [n for n, f in audio.FORMATS.items() if f.container != "RAW"])
def test_every_format_decodes_to_the_same_duration(name: str, rate: int) -> None:
    pcm = tone(2.5, rate)
    data = audio.encode(pcm, rate, audio.FORMATS[name])
    decoded, decoded_rate = soundfile.read(io.BytesIO(data))
    assert decoded_rate == audio.encoded_rate(audio.FORMATS[name], rate)
    assert abs(len(decoded) / decoded_rate - 2.5) < 0.03


def test_pcm_is_raw_little_endian() -> None:
    pcm = tone(0.5, 22050)
    data = audio.encode(pcm, 22050, audio.FORMATS["pcm"])
    assert np.array_equal(np.frombuffer(data, "<i2"), pcm)


def test_lossless_formats_carry_the_master_samples() -> None:
    pcm = tone(1.0, 22050)
    for name in ("wav", "flac"):
        decoded, _ = audio.decode(audio.encode(pcm, 22050, audio.FORMATS[name]))
        assert np.array_equal(decoded, pcm)


def test_opus_is_resampled_to_a_rate_it_accepts() -> None:
    assert audio.encoded_rate(audio.FORMATS["opus"], 22050) == 24000
    assert audio.encoded_rate(audio.FORMATS["opus"], 24000) == 24000
    assert audio.encoded_rate(audio.FORMATS["mp3"], 22050) == 22050


def test_pieces_join_with_fades_and_pauses() -> None:
    loud = np.ones(1000, np.float32) * 0.5
    piece = audio.fade(loud, 22050)
    assert piece[0] == 0 and piece[-1] == 0  # faded: no step at the seams
    silent = np.zeros(0, np.int16)
    first, second = audio.joined([silent, piece, silent, piece], 22050, 1.0)  # silent ones skipped
    assert np.array_equal(first, piece)
    assert len(second) > len(piece) and not second[: len(second) - len(piece)].any()
    assert np.array_equal(second[-len(piece) :], piece)
    assert len(audio.finish([], 22050)) > 0  # silence, never an empty file


@pytest.mark.parametrize(
    ("name", "rate", "holds"),
    [("wav", 22050, True), ("pcm", 24000, True), ("wav_22050", 22050, True), ("wav_8000", 22050, False),
     ("pcm_16000", 24000, False), ("flac", 22050, False), ("mp3", 22050, False), ("ulaw", 8000, False)],
)  # fmt: skip
def test_a_file_holding_the_masters_samples_says_where_they_begin(name: str, rate: int, holds: bool) -> None:
    # A text's pieces are indexed as ranges of its file only where the file holds them unchanged.
    pcm = (np.sin(np.arange(rate // 10) / 7.0) * 12000).astype(np.int16)
    fmt = audio.get_format(name)
    data = audio.encode(pcm, rate, fmt)
    at = audio.samples_at(data, fmt, rate)
    assert audio.holds_samples(fmt, rate) is holds and (at is not None) is holds
    if at is not None:
        assert data[at : at + 2 * len(pcm)] == pcm.astype("<i2").tobytes()


@pytest.mark.parametrize("name", ["ulaw", "alaw", "pcm_16000", "pcm_8000"])
def test_a_stream_fed_in_pieces_carries_the_stored_files_very_samples(name: str) -> None:
    """However the master reaches a resampled stream (sentence by sentence, in odd cuts), its bytes
    are the file's (soxr's int16 output moved samples by a step or two with the cuts)."""
    from ttsd.audio_stream import StreamEncoder

    rng = np.random.default_rng(7)
    pcm = audio.to_pcm16(0.3 * rng.standard_normal(22050 * 3).astype(np.float32))
    pcm[-5000:] //= 2000  # a near-silent tail: where μ-law's +0 and -0 differ
    fmt = audio.FORMATS[name]
    stored = audio.encode(pcm, 22050, fmt)
    for _ in range(3):
        encoder = StreamEncoder(fmt, 22050)
        cuts = np.sort(rng.choice(pcm.size, 6, replace=False))
        streamed = b"".join(encoder.feed(piece) for piece in np.split(pcm, cuts)) + encoder.finish()
        assert streamed == stored
