"""The ChatTTS adapter on a tiny random-weight model built from ChatTTS's own modules: the real
loading path (file checks, SHA-256 check, config), pinned seeded voices, out-of-memory handling."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from ttsd.config import Settings
from ttsd.engines import select
from ttsd.engines.chattts import VOICES, ChatTTSEngine
from ttsd.errors import EngineOutOfMemory, EngineUnavailable, job_error_from

from .conftest import unique
from .servers import start_server, stop_server, wait_until


def _spec(directory: Path | None, max_tokens: int = 128):  # type: ignore[no-untyped-def]
    settings = Settings(chattts_dir=directory, chattts_max_tokens=max_tokens)
    return select(["chattts"], settings)["chattts"]


@pytest.fixture(scope="module")
def engine(chattts_dir: Path) -> ChatTTSEngine:
    loaded = _spec(chattts_dir).load(threads=1)
    assert isinstance(loaded, ChatTTSEngine)
    return loaded


def test_every_pinned_voice_speaks_the_same_samples_for_the_same_seed(engine: ChatTTSEngine) -> None:
    assert {v.name for v in VOICES} >= {f"zh-chattts-{n}" for n in range(1, 5)}
    assert {v.language for v in VOICES} == {"cmn", "en-US"}
    outputs = {}
    for voice in VOICES:
        text = "今天天气很好。" if voice.language == "cmn" else "Hello there."
        first = engine.synthesize(text, voice, speed=1.0, seed=None)
        again = engine.synthesize(text, voice, speed=1.0, seed=None)
        assert first.dtype == np.float32 and first.ndim == 1 and len(first) > 0, voice.name
        assert np.array_equal(first, again), voice.name  # the voice's own seed: the same every time
        outputs[voice.name] = first
    assert engine.sample_rate == 24000
    # Four speakers, not one: the pinned embeddings differ.
    assert len({outputs[f"zh-chattts-{n}"].tobytes() for n in range(1, 5)}) == 4
    seeded = engine.synthesize("Hello there.", VOICES[4], speed=1.0, seed=7)
    assert np.array_equal(seeded, engine.synthesize("Hello there.", VOICES[4], speed=1.0, seed=7))


def test_speakers_are_pinned_across_loads(chattts_dir: Path, engine: ChatTTSEngine) -> None:
    other = _spec(chattts_dir).load(threads=1)
    voice = VOICES[1]
    assert np.array_equal(
        engine.synthesize("今天天气很好。", voice, speed=1.0, seed=None),
        other.synthesize("今天天气很好。", voice, speed=1.0, seed=None),
    )


def test_voices_file_beside_the_weights_pins_given_speakers(chattts_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "weights"
    shutil.copytree(chattts_dir, copy)
    side = json.loads((copy / "ttsd-chattts.json").read_text())
    engine = _spec(copy).load(threads=1)
    speaker_3 = engine._speakers["speaker-3"]
    side["voices"] = {"zh-chattts-1": speaker_3}
    (copy / "ttsd-chattts.json").write_text(json.dumps(side))
    pinned = _spec(copy).load(threads=1)
    assert pinned._speakers["speaker-1"] == speaker_3
    assert _spec(copy).version != _spec(chattts_dir).version  # other voices: other cache keys


def test_missing_weights_are_a_clear_error(chattts_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="set TTSD_CHATTTS_DIR"):
        _spec(None).load(threads=1)
    with pytest.raises(EngineUnavailable, match="is not a directory"):
        _spec(tmp_path / "absent").load(threads=1)
    copy = tmp_path / "weights"
    shutil.copytree(chattts_dir, copy)
    (copy / "asset" / "DVAE.safetensors").unlink()
    with pytest.raises(EngineUnavailable, match=r"TTSD_CHATTTS_DIR=.* lacks asset/DVAE\.safetensors"):
        _spec(copy).load(threads=1)


def test_weights_are_checked_against_their_hashes(chattts_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "weights"
    shutil.copytree(chattts_dir, copy)
    tampered = copy / "asset" / "Embed.safetensors"
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(EngineUnavailable, match="does not match its SHA-256"):
        _spec(copy).load(threads=1)
    # Without the side file's hashes, ChatTTS's official map applies: these are not those weights.
    shutil.rmtree(copy)
    shutil.copytree(chattts_dir, copy)
    side = json.loads((copy / "ttsd-chattts.json").read_text())
    del side["sha256"]
    (copy / "ttsd-chattts.json").write_text(json.dumps(side))
    with pytest.raises(EngineUnavailable, match="does not match its SHA-256"):
        _spec(copy).load(threads=1)


def test_out_of_gpu_memory_is_retried_once_then_a_retryable_failure(
    engine: ChatTTSEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    voice = VOICES[0]
    expected = engine.synthesize("今天天气很好。", voice, speed=1.0, seed=None)
    real_infer = engine._chat.infer
    failures = {"left": 1}
    freed = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))

    def infer(*args: object, **kwargs: object) -> object:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return real_infer(*args, **kwargs)

    monkeypatch.setattr(engine._chat, "infer", infer)
    # Once: the cache is freed and the sentence retried, with the same samples.
    assert np.array_equal(engine.synthesize("今天天气很好。", voice, speed=1.0, seed=None), expected)
    assert freed == [True]
    # Twice: a retryable failure, and the engine still works afterwards.
    failures["left"] = 2
    with pytest.raises(EngineOutOfMemory) as failed:
        engine.synthesize("今天天气很好。", voice, speed=1.0, seed=None)
    assert failed.value.status == 503 and failed.value.retry_after >= 1
    rebuilt = job_error_from(failed.value.code, failed.value.message)  # as it crosses the pipe
    assert isinstance(rebuilt, EngineOutOfMemory) and rebuilt.code == "engine_out_of_memory"
    assert np.array_equal(engine.synthesize("今天天气很好。", voice, speed=1.0, seed=None), expected)


@pytest.mark.slow
def test_served_from_a_pool(chattts_dir: Path, tmp_path: Path) -> None:
    """A chattts pool beside an eSpeak one: warmed, ready, serving 24 kHz audio; without weights
    the pool is unavailable with the reason, and only its voices are refused."""
    env = {
        "TTSD_POOLS": "espeak:1,chattts:1",
        "TTSD_DEFAULT_VOICE": "zh-female",
        "TTSD_CHATTTS_MAX_TOKENS": "128",
    }
    for name in ("with", "without"):
        (tmp_path / name).mkdir()
    srv = start_server(tmp_path / "with", env={**env, "TTSD_CHATTTS_DIR": str(chattts_dir)})
    try:
        assert httpx.get(f"{srv.url}/readyz").json()["engines"] == ["espeak", "chattts"]
        body = {
            "model": "tts-1",
            "input": unique("今天天气很好。"),
            "voice": "zh-chattts-2",
            "response_format": "wav",
        }
        answer = httpx.post(f"{srv.url}/v1/audio/speech", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        samples, rate = sf.read(io.BytesIO(answer.content), dtype="float32")
        assert rate == 24000 and len(samples) > 2400
    finally:
        stop_server(srv)
    srv = start_server(tmp_path / "without", env=env, ready=False)
    try:

        def reason() -> str:
            return str(httpx.get(f"{srv.url}/readyz").json().get("unavailable", {}).get("chattts", ""))

        wait_until(lambda: reason().startswith("failed to load"), 60, "the chattts pool to fail")
        wait_until(lambda: "espeak" in httpx.get(f"{srv.url}/readyz").json()["engines"], 60, "espeak")
        assert "set TTSD_CHATTTS_DIR" in reason()
        refused = httpx.post(f"{srv.url}/v1/synthesize", json={"text": "你好。", "voice": "zh-chattts-1"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_unavailable"
        assert "chattts" in refused.json()["error"]["message"]
        served = httpx.post(f"{srv.url}/v1/synthesize", json={"text": unique("你好。"), "voice": "zh-female"})
        assert served.status_code == 202
    finally:
        stop_server(srv)
