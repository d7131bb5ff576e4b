"""Single flight, the bounded pool and crash recovery, against real servers."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from .conftest import unique
from .servers import Server, start_server, stop_server, wait_for


def post_all(server: Server, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    with server.client(limits=limits) as client, ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: client.post("/v1/synthesize", json=b), bodies))


@pytest.mark.slow
def test_fifty_identical_requests_make_one_synthesis(server: Server) -> None:
    body = {
        "text": unique("Your order has shipped and will arrive on Tuesday. Thank you for your patience."),
        "format": "mp3",
    }
    server.wait_idle()
    syntheses = server.metric("ttsd_syntheses_total")
    merged = server.metric("ttsd_cache_requests_total", result="merged")
    responses = post_all(server, [body] * 50)
    assert all(r.status_code in (200, 202) for r in responses)
    task_ids = {r.json()["task_id"] for r in responses if r.status_code == 202}
    assert len(task_ids) == 1
    assert server.wait_task(task_ids.pop())["status"] == "done"
    assert server.metric("ttsd_syntheses_total") - syntheses == 1
    assert server.metric("ttsd_cache_requests_total", result="merged") - merged >= 1


@pytest.mark.slow
def test_fifty_distinct_requests_all_finish(server: Server) -> None:
    # Sentences of their own, four a text: a backlog that lasts while the API is asked below.
    said = "Ticket number {0} is now resolved. Case {0} was closed this morning. Its engineer left a note."
    bodies = [{"text": unique(said.format(i)), "voice": "en-heart"} for i in range(50)]
    server.wait_idle()
    syntheses = server.metric("ttsd_syntheses_total")
    responses = post_all(server, bodies)
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses if r.status_code != 202]
    # While every slot is busy the event loop still answers: before the backlog is through (a
    # deadline on the answer would measure how loaded the machine running the suite is).
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    with server.client() as client:
        statuses = [client.get(f"/v1/tasks/{r.json()['task_id']}").json()["status"] for r in responses]
    assert any(status not in ("done", "failed") for status in statuses), statuses
    done = [server.wait_task(r.json()["task_id"]) for r in responses]
    assert all(d["status"] == "done" for d in done)
    assert len({d["key"] for d in done}) == 50
    assert server.metric("ttsd_syntheses_total") - syntheses == 50


def engine_pids(server: Server) -> list[int]:
    pids = []
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:
            continue  # a process that is just exiting
    return pids


@pytest.mark.slow
def test_killed_engine_process_retries_only_its_job(tmp_path: Path) -> None:
    srv = start_server(tmp_path, env={"TTSD_ENGINE_SLOTS": "1"})
    try:
        [pid] = engine_pids(srv)
        long_text = " ".join(f"This is sentence number {i} of a long announcement." for i in range(40))
        with srv.client() as client:
            task = client.post("/v1/synthesize", json={"text": long_text}).json()
            # "synthesizing" is set once the batch holds the only slot: the kill lands inside it.
            wait_for(
                lambda: client.get(f"/v1/tasks/{task['task_id']}").json()["stage"] == "synthesizing",
                timeout=30,
                interval=0.01,
                message="the job never reached the engine",
            )
            psutil.Process(pid).send_signal(signal.SIGKILL)
            result = srv.wait_task(task["task_id"])
            # The batch is retried on the replacement process, so the job finishes: without the retry
            # it fails (engine_crashed), and a kill that missed the batch is caught below.
            assert result["status"] == "done", result
            lost = [
                e
                for e in srv.events()
                if e.get("event") == "batch lost its engine process"
                and e.get("request_id") == task["task_id"]
            ]
            assert len(lost) == 1, f"the kill should have cost this job's batch exactly once: {lost}"
            # The retry went on from where the dead process stopped: each sentence made once, none
            # lost and none counted twice.
            assert result["sentences"] == 40 and result["sentences_reused"] == 0, result
            assert srv.metric("ttsd_sentence_requests_total", result="miss") == 40
            assert client.get("/healthz").status_code == 200
            [replacement] = engine_pids(srv)
            assert replacement != pid
            later = client.post("/v1/synthesize", json={"text": unique("After the crash.")}).json()
            assert srv.wait_task(later["task_id"])["status"] == "done"
            # A job finished on its retry is cached like any other.
            assert client.post("/v1/synthesize", json={"text": long_text}).status_code == 200
            assert srv.metric("ttsd_engine_restarts") == 1.0
    finally:
        stop_server(srv)


@pytest.mark.slow
def test_full_queue_sheds_load_with_retry_after(tmp_path: Path) -> None:
    srv = start_server(tmp_path, env={"TTSD_ENGINE_SLOTS": "1", "TTSD_QUEUE_LIMIT": "3"})
    try:
        bodies = [{"text": unique(f"Queued announcement number {i}. " * 3)} for i in range(12)]
        responses = post_all(srv, bodies)
        codes = sorted(r.status_code for r in responses)
        assert set(codes) == {202, 503}, codes
        for r in responses:
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "overloaded"
                assert int(r.headers["retry-after"]) >= 1
        accepted = [r.json()["task_id"] for r in responses if r.status_code == 202]
        assert all(srv.wait_task(t)["status"] == "done" for t in accepted)
    finally:
        stop_server(srv)


@pytest.mark.slow
def test_cache_survives_restart_and_respects_byte_budget(tmp_path: Path) -> None:
    env = {"TTSD_CACHE_MAX_BYTES": "400000", "TTSD_ENGINES": "espeak", "TTSD_DEFAULT_VOICE": "en-us-female"}
    srv = start_server(tmp_path, env=env)
    body = {"text": "A cached sentence that survives a restart.", "format": "wav"}
    try:
        with srv.client() as client:
            task = client.post("/v1/synthesize", json=body).json()
            assert srv.wait_task(task["task_id"])["status"] == "done"
    finally:
        stop_server(srv)
    srv = start_server(tmp_path, env=env)
    try:
        with srv.client() as client:
            assert client.post("/v1/synthesize", json=body).status_code == 200
            # Fill well past the budget: old entries go, the total stays under it.
            for i in range(12):
                t = client.post(
                    "/v1/synthesize",
                    json={"text": f"Filler text number {i} for the budget.", "format": "wav"},
                ).json()
                srv.wait_task(t["task_id"])
            total = sum(p.stat().st_size for p in (srv.data_dir / "audio").rglob("*") if p.is_file())
            assert total <= 400000
            assert client.post("/v1/synthesize", json=body).status_code == 202  # evicted: queued again
    finally:
        stop_server(srv)
