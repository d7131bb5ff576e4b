"""English output transcribed back by Whisper tiny.en: the words must survive the whole pipeline
(sentence splitting, joining, encoding, caching)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from ttsd.engines import REGISTRY
from ttsd.jobs.slot import synthesize_master
from ttsd.keys import SynthesisSpec

from .conftest import transcribe
from .servers import Server

PARAGRAPH = (
    "Thank you for calling our support line. Your order left the warehouse this morning, "
    "and the driver should reach your house before the end of the day. If nobody is at home, "
    "the parcel will be left with a neighbour. You can change the delivery address on our website "
    "at any time. Is there anything else I can help you with today?"
)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower().replace("neighbor", "neighbour")).split()


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1] / len(reference)


@pytest.mark.slow
@pytest.mark.parametrize(("voice", "fmt"), [("en-joe", "mp3"), ("en-heart", "opus")])
def test_word_error_rate_at_most_ten_percent(
    server: Server,
    whisper,
    voice: str,
    fmt: str,  # type: ignore[no-untyped-def]
    artifacts: Path,
) -> None:
    with server.client() as client:
        response = client.post("/v1/synthesize", json={"text": PARAGRAPH, "voice": voice, "format": fmt})
        if response.status_code == 202:
            url = server.wait_task(response.json()["task_id"])["url"]
        else:
            url = response.json()["url"]
        data = client.get(url).content
    (artifacts / f"intelligibility-{voice}.{fmt}").write_bytes(data)
    transcript = transcribe(whisper, data)
    wer = word_error_rate(words(PARAGRAPH), words(transcript))
    (artifacts / f"intelligibility-{voice}.txt").write_text(f"WER {wer:.3f}\n{transcript}\n")
    assert wer <= 0.10, (wer, transcript)


@pytest.mark.slow
@pytest.mark.parametrize("voice", ["en-alpha", "en-kumo"])
def test_kokoro_reads_english_at_most_ten_percent_wrong(
    whisper,  # type: ignore[no-untyped-def]
    voice: str,
    artifacts: Path,
) -> None:
    """Kokoro's Japanese voices reading English (eSpeak NG phonemes), on the engine in process:
    the service around it is the one the test above checks."""
    spec = REGISTRY["kokoro"]
    engine = spec.load(threads=2)
    chosen = next(v for v in spec.voices if v.name == voice)
    job = SynthesisSpec(spec.name, spec.version, voice, chosen.speaker, chosen.language, PARAGRAPH, 1.0, None)
    pcm = synthesize_master(engine, job)
    soundfile.write(artifacts / f"intelligibility-{voice}.flac", pcm, engine.sample_rate)
    audio16k = soxr.resample(pcm.astype(np.float32) / 32768, engine.sample_rate, 16000).astype(np.float32)
    segments, _ = whisper.transcribe(audio16k, language="en", beam_size=5)
    transcript = " ".join(s.text for s in segments)
    wer = word_error_rate(words(PARAGRAPH), words(transcript))
    (artifacts / f"intelligibility-{voice}.txt").write_text(f"WER {wer:.3f}\n{transcript}\n")
    assert wer <= 0.10, (wer, transcript)
