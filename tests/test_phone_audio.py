"""Phone audio: G.711 μ-law and A-law at 8 kHz, against a reference codec (the ``g711`` package,
ITU-T G.191's algorithm), and heard by Whisper as well as the engine's own rate."""

from __future__ import annotations

import io

import g711
import httpx
import numpy as np
import pytest
import soundfile
import soxr

from ttsd import audio
from ttsd import g711 as ours

from .conftest import unique
from .servers import Server
from .test_intelligibility import PARAGRAPH, word_error_rate, words

EVERY_SAMPLE = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


@pytest.mark.parametrize(
    ("encode", "reference"), [(ours.ulaw, g711.encode_ulaw), (ours.alaw, g711.encode_alaw)]
)
def test_every_sample_encodes_as_the_reference_codec(encode, reference) -> None:  # type: ignore[no-untyped-def]
    expected = np.frombuffer(reference(EVERY_SAMPLE.astype(np.float32) / 32768), np.uint8)
    assert np.array_equal(np.frombuffer(encode(EVERY_SAMPLE), np.uint8), expected)


@pytest.mark.parametrize("name", ["ulaw", "alaw"])
def test_companding_keeps_the_signal(name: str) -> None:
    t = np.arange(8000) / 8000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    coded = audio.encode(pcm, 8000, audio.get_format(name))
    decoded = (g711.decode_ulaw if name == "ulaw" else g711.decode_alaw)(coded) * 32768
    assert len(coded) == len(pcm)
    # G.711 keeps about 38 dB of signal to noise on a loud tone.
    noise = decoded - pcm
    assert 10 * np.log10(np.mean(pcm.astype(float) ** 2) / np.mean(noise**2)) > 30


def _file(server: Server, text: str, fmt: str) -> bytes:
    with server.client() as client:
        answer = client.post("/v1/synthesize", json={"text": text, "voice": "en-joe", "format": fmt})
        body = answer.json() if answer.status_code == 200 else server.wait_task(answer.json()["task_id"])
        return httpx.get(body["url"], follow_redirects=True, timeout=60).content


def test_the_service_encodes_phone_audio_as_the_reference_does(server: Server) -> None:
    """ulaw and alaw are the 8 kHz master samples companded: the reference codec, given the same
    text's pcm_8000, makes the very same bytes."""
    text = unique("Press one for billing.")
    pcm8k = np.frombuffer(_file(server, text, "pcm_8000"), "<i2")
    for name, reference in (("ulaw", g711.encode_ulaw), ("alaw", g711.encode_alaw)):
        assert _file(server, text, name) == reference(pcm8k.astype(np.float32) / 32768)


@pytest.mark.slow
@pytest.mark.parametrize("server", ["embedded"], indirect=True)
def test_whisper_hears_phone_audio_within_two_points(server: Server, whisper) -> None:  # type: ignore[no-untyped-def]
    wide = _file(server, PARAGRAPH, "wav")
    phone = _file(server, PARAGRAPH, "ulaw")
    samples, rate = soundfile.read(io.BytesIO(wide), dtype="float32")
    rates = {"22 kHz": (samples, rate), "8 kHz μ-law": (g711.decode_ulaw(phone).astype(np.float32), 8000)}
    wer = {}
    for name, (signal, signal_rate) in rates.items():
        heard = whisper.transcribe(
            soxr.resample(signal, signal_rate, 16000).astype(np.float32), language="en", beam_size=5
        )[0]
        wer[name] = word_error_rate(words(PARAGRAPH), words(" ".join(s.text for s in heard)))
    assert wer["8 kHz μ-law"] <= wer["22 kHz"] + 0.02, wer
