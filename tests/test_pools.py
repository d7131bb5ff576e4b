"""Engine pools: the layout format, devices, and isolation between pools (real engines)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
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
from .servers import Server, base_env, start_server, stop_server, wait_until
from .stack import start_stack

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


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def engine_processes(server: Server) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_pools_are_isolated(tmp_path: Path) -> None:
    """Two pools in one server: each process loads only its pool's engines; a piper backlog fills
    piper's queue (503 + Retry-After naming it) while eSpeak requests are served at once."""
    srv = start_server(
        tmp_path,
        env={"TTSD_POOLS": "espeak:1,piper:1", "TTSD_QUEUE_LIMIT": "2", "TTSD_SENTENCE_REUSE": "false"},
    )
    try:
        processes = engine_processes(srv)
        assert len(processes) == 2
        # They yield to the API beside them (TTSD_ENGINE_NICE's default).
        assert {p.nice() for p in processes} == {psutil.Process(srv.process.pid).nice() + 5}
        onnx = [p for p in processes if "libonnxruntime" in _mapped(p.pid)]
        espeak = [p for p in processes if "espeakng_loader" in _mapped(p.pid)]
        # piper runs on onnxruntime; the eSpeak pool's process never loads it, nor piper's model.
        assert len(onnx) == 1 and len(espeak) == 1 and onnx != espeak
        assert srv.metric("ttsd_slots", pool="espeak") == 1 and srv.metric("ttsd_slots", pool="piper") == 1

        with httpx.Client(base_url=srv.url, timeout=30) as client:
            long_text = " ".join(f"This is sentence number {i} of a long reply." for i in range(12))
            answers = [
                client.post("/v1/synthesize", json={"text": unique(long_text), "voice": "en-joe"})
                for _ in range(8)
            ]
            refused = [a for a in answers if a.status_code == 503]
            accepted = [a for a in answers if a.status_code == 202]
            assert refused and len(accepted) >= 3, [a.status_code for a in answers]
            error = refused[0].json()["error"]
            assert error["code"] == "overloaded" and "piper queue is full" in error["message"]
            assert int(refused[0].headers["retry-after"]) >= 1
            assert srv.metric("ttsd_queue_depth", pool="piper") == 2
            # The other pool does not wait behind piper's backlog.
            started = time.monotonic()
            quick = client.post("/v1/synthesize", json={"text": unique("Still here."), "voice": "zh-female"})
            assert quick.status_code == 202, quick.text
            assert srv.wait_task(quick.json()["task_id"])["status"] == "done"
            assert time.monotonic() - started < 10
            assert srv.metric("ttsd_queue_depth", pool="espeak") == 0
            voices = client.get("/v1/voices").json()
            assert voices["engines"] == {"espeak": "ready", "piper": "ready"}
            assert all(v["ready"] for v in voices["voices"])
            waits = srv.metric("ttsd_queue_wait_seconds_count", pool="espeak")
            assert waits >= 1
    finally:
        stop_server(srv)


@pytest.mark.slow
def test_distributed_jobs_go_to_the_workers_of_their_engine(tmp_path: Path) -> None:
    """Two workers with different pools serve one API: each engine's jobs reach only the worker
    hosting it; an engine no live worker hosts is refused with 503 naming it, and readiness says so."""
    stack = start_stack(tmp_path, workers=0)
    try:
        espeak = stack.start_worker("cpu-espeak", pools="espeak:1")
        srv = start_server(tmp_path, env={**stack.env, "TTSD_ENGINES": "piper,espeak"}, ready=False)
        try:
            wait_until(lambda: httpx.get(f"{srv.url}/readyz", timeout=5).status_code == 200, 90, "espeak")
            ready = httpx.get(f"{srv.url}/readyz", timeout=10).json()
            assert ready["engines"] == ["espeak"]
            assert ready["unavailable"] == {"piper": "no live worker hosts it"}
            with httpx.Client(base_url=srv.url, timeout=30) as client:
                refused = client.post(
                    "/v1/synthesize", json={"text": unique("Nobody hosts me."), "voice": "en-joe"}
                )
                assert refused.status_code == 503
                assert refused.json()["error"]["code"] == "engine_unavailable"
                assert "engine piper has no live slot" in refused.json()["error"]["message"]
                assert "retry-after" in refused.headers

                stack.start_worker("cpu-piper", pools="piper:1")
                wait_until(
                    lambda: not httpx.get(f"{srv.url}/readyz", timeout=5).json()["unavailable"],
                    90,
                    "the piper worker",
                )
                tasks = {}
                for voice in ("en-joe", "zh-female", "en-us-male"):
                    answer = client.post(
                        "/v1/synthesize", json={"text": unique("Routed by engine."), "voice": voice}
                    )
                    assert answer.status_code == 202, answer.text
                    tasks[voice] = answer.json()["task_id"]
                for task_id in tasks.values():
                    assert srv.wait_task(task_id)["status"] == "done"
                espeak_log = (tmp_path / "worker-cpu-espeak.log").read_text()
                piper_log = (tmp_path / "worker-cpu-piper.log").read_text()
                assert tasks["en-joe"] in piper_log and tasks["en-joe"] not in espeak_log
                for voice in ("zh-female", "en-us-male"):
                    assert tasks[voice] in espeak_log and tasks[voice] not in piper_log
                assert srv.metric("ttsd_slots", pool="espeak") == 1
                assert srv.metric("ttsd_slots", pool="piper") == 1
        finally:
            stop_server(srv)
        assert espeak.poll() is None
    finally:
        stack.stop()


@pytest.mark.slow
def test_one_worker_command_runs_a_node_per_pool(tmp_path: Path) -> None:
    """`ttsd worker --pools a:1,b:1` runs one Celery node per pool, each announcing its own pool,
    and passes SIGTERM on to them."""
    stack = start_stack(tmp_path, workers=0)
    try:
        worker = stack.start_worker("both", pools="espeak:1,piper:1")
        srv = start_server(tmp_path, env={**stack.env, "TTSD_ENGINES": "piper,espeak"})
        try:
            assert httpx.get(f"{srv.url}/readyz", timeout=10).json()["engines"] == ["piper", "espeak"]
            assert (
                srv.metric("ttsd_slots", pool="espeak") == 1 and srv.metric("ttsd_slots", pool="piper") == 1
            )
            with httpx.Client(base_url=srv.url, timeout=30) as client:
                for voice in ("en-joe", "yue-male"):
                    answer = client.post(
                        "/v1/synthesize", json={"text": unique("One command."), "voice": voice}
                    )
                    assert srv.wait_task(answer.json()["task_id"])["status"] == "done"
            nodes = psutil.Process(worker.pid).children()
            assert len(nodes) == 2
            worker.terminate()  # the supervisor alone: it passes the signal on
            assert worker.wait(timeout=60) == 0
            assert not any(node.is_running() and node.status() != psutil.STATUS_ZOMBIE for node in nodes)
            stack.workers.remove(worker)
        finally:
            stop_server(srv)
    finally:
        stack.stop()
