"""Engine pools as processes (real engines): each pool's engines in processes of their own, apart
from the others', and in distributed mode jobs going to the workers of their engine, with one worker
command running a node per pool."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil
import pytest

from .conftest import unique
from .servers import Server, start_server, stop_server, wait_until
from .stack import start_stack


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
