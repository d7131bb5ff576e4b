"""Engine pools: the layout format, devices, and a pool that cannot load (real engines). Pools'
processes kept apart, and distributed jobs going to their engine's workers: ``test_pool_processes``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttsd.backends import build_api_backends
from ttsd.config import Settings
from ttsd.errors import ConfigError, EngineDown
from ttsd.jobs.embedded.queue import InProcessQueue
from ttsd.jobs.model import Job
from ttsd.keys import SynthesisSpec
from ttsd.links import Links
from ttsd.metrics import Metrics
from ttsd.pools import PoolSpec, check_devices, gpu_count, parse_pools

from .conftest import unique
from .servers import base_env

KINDS = {"piper": ("cpu", "cuda"), "kokoro": ("cpu", "cuda"), "espeak": ("cpu",), "hibari": ("cpu",)}


def test_pools_parse() -> None:
    assert parse_pools("piper+hibari+espeak:2,kokoro:1") == (
        PoolSpec(("piper", "hibari", "espeak"), 2),
        PoolSpec(("kokoro",), 1),
    )
    [gpu] = parse_pools(" kokoro:4@cuda:0+cuda:1 ")
    assert gpu.devices == ("cuda:0", "cuda:1")
    assert [gpu.device(slot) for slot in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert str(gpu) == "kokoro:4@cuda:0+cuda:1" and gpu.name == "kokoro"
    assert str(parse_pools("piper:2@cpu")[0]) == "piper:2"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("piper", "no slot count"),
        ("piper:", "whole number"),
        ("piper:two", "whole number"),
        ("piper:0", "between 1 and 256"),
        ("piper:257", "between 1 and 256"),
        (":2", "not an engine name"),
        ("piper+:2", "not an engine name"),
        ("Piper:1", "not an engine name"),
        ("piper+piper:1", "names an engine twice"),
        ("piper:1,espeak+piper:1", "'piper' is in two pools"),
        ("kokoro:1@gpu", "unknown device 'gpu'"),
        ("kokoro:1@cuda", "unknown device 'cuda'"),
        ("kokoro:1@cuda:0+cuda:0", "names a device twice"),
    ],
)
def test_bad_pools_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_pools(text)


def test_settings_take_the_engines_of_the_pools() -> None:
    settings = Settings(pools="espeak:2,piper+hibari:1", engines="piper")
    assert settings.engines == ("espeak", "piper", "hibari")
    assert settings.total_slots == 3
    plain = Settings(engines="piper,espeak", engine_slots=3)
    assert plain.pool_layout == (PoolSpec(("piper", "espeak"), 3),)


def test_devices_are_checked_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'espeak' runs on the cpu only"):
        check_devices(parse_pools("piper+espeak:1@cuda:0"), KINDS)
    check_devices(parse_pools("piper+espeak:2"), KINDS)  # cpu needs nothing
    assert gpu_count(tmp_path / "absent") == 0
    (tmp_path / "gpus" / "0000:01:00.0").mkdir(parents=True)
    assert gpu_count(tmp_path / "gpus") == 1


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["serve", "--pools", "piper"], "no slot count"),
        (["serve", "--pools", "espeak:1@cuda:0"], "runs on the cpu only"),
        (["worker", "--pools", "piper:1,piper:2"], "in two pools"),
        (["serve", "--pools", "nosuch:1"], "unknown engine 'nosuch'"),
    ],
)
def test_cli_refuses_bad_pools(tmp_path: Path, command: list[str], says: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ttsd.cli", *command],
        env=base_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(gpu_count() > 0, reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_gpu_pool_without_a_gpu_is_a_clear_start_up_error(tmp_path: Path, command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ttsd.cli", command, "--pools", "espeak:1,piper:1@cuda:0"],
        env=base_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "pool piper:1@cuda:0 is placed on cuda:0, but this machine has no NVIDIA GPU" in result.stderr


def _onnxruntime_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.skipif(_onnxruntime_has_cuda(), reason="onnxruntime here can use CUDA")
def test_a_pool_that_cannot_load_refuses_only_its_engine(tmp_path: Path) -> None:
    """A pool whose engine fails to load on its device (piper on cuda:0 with a CPU-only
    onnxruntime: no silent fallback to the CPU) answers its requests with 503 naming the engine,
    while the other pool runs; while a pool is loading, the same."""

    def job(engine: str, voice: str, speaker: str) -> Job:
        spec = SynthesisSpec(engine, "v", voice, speaker, "en-US", unique("Pools apart."), 1.0, None)
        return Job(task_id=spec.key[:32], spec=spec, fmt="wav")

    async def scenario() -> None:
        # The queue itself, not create_app, whose start-up check would refuse cuda:0 here.
        settings = Settings(pools="espeak:1,piper:1@cuda:0", data_dir=tmp_path / "data")
        backends = build_api_backends(settings, Metrics(), Links.of(settings))
        queue = backends.queue
        assert isinstance(queue, InProcessQueue)
        await queue.start()
        try:
            assert queue.engine_states() == {"espeak": "loading", "piper": "loading"}
            with pytest.raises(EngineDown, match="engine espeak has no live slot \\(loading\\)"):
                await queue.submit(job("espeak", "en-us-female", "en-us+f3"))
            deadline = time.monotonic() + 60
            while not (queue.pool("espeak").ready and queue.pool("piper").fatal):
                assert time.monotonic() < deadline, queue.engine_states()
                await asyncio.sleep(0.05)
            states = queue.engine_states()
            assert states["espeak"] == "ready"
            assert states["piper"].startswith("failed to load: engine_unavailable: piper is placed on cuda:0")
            assert "no CUDA provider" in states["piper"]
            assert queue.ready
            with pytest.raises(EngineDown, match="engine piper has no live slot") as refused:
                await queue.submit(job("piper", "en-joe", "en_US-joe-medium"))
            assert refused.value.retry_after >= 1 and refused.value.status == 503
            submitted = await queue.submit(job("espeak", "en-us-female", "en-us+f3"))
            final = await asyncio.wait_for(queue.wait(submitted.status.task_id), 60)
            assert final is not None and final.status.value == "done", final
        finally:
            await queue.stop()
            backends.index.close()

    asyncio.run(scenario())
