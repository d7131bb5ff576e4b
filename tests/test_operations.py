"""Operations: metrics that move, JSON logs with ids and without text, graceful shutdown, cache tools."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile

from .conftest import unique
from .servers import Server, base_env, start_server, stop_server, wait_for


def test_metrics_move_for_hit_miss_merge_and_failure(server: Server) -> None:
    def m(name: str, **labels: str) -> float:
        return server.metric(name, **labels)

    before = {
        "hit": m("ttsd_cache_requests_total", result="hit"),
        "miss": m("ttsd_cache_requests_total", result="miss"),
        "merged": m("ttsd_cache_requests_total", result="merged"),
        "cancelled": m("ttsd_job_failures_total", code="cancelled"),
        "202": m("ttsd_http_requests_total", route="/v1/synthesize", status="202"),
        "latency": m("ttsd_http_request_seconds_count", route="/v1/synthesize"),
        "audio": m("ttsd_audio_seconds_total"),
    }
    text = unique(" ".join(f"Metric sentence {i}." for i in range(15)))
    with server.client() as client:
        first = client.post("/v1/synthesize", json={"text": text}).json()
        client.post("/v1/synthesize", json={"text": text})  # in flight: merged
        server.wait_task(first["task_id"])
        assert client.post("/v1/synthesize", json={"text": text}).status_code == 200  # hit
    # A failure: a stream whose only listener leaves is cancelled.
    body = {"input": unique(" ".join(f"Abandoned {i}." for i in range(60))), "response_format": "pcm"}
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=60) as response:
        task_id = response.headers["x-task-id"]
        next(response.iter_raw())
    server.wait_task(task_id)
    assert m("ttsd_cache_requests_total", result="miss") - before["miss"] >= 2
    assert m("ttsd_cache_requests_total", result="merged") - before["merged"] >= 1
    assert m("ttsd_cache_requests_total", result="hit") - before["hit"] >= 1
    assert m("ttsd_job_failures_total", code="cancelled") - before["cancelled"] == 1
    assert m("ttsd_http_requests_total", route="/v1/synthesize", status="202") - before["202"] >= 2
    assert m("ttsd_http_request_seconds_count", route="/v1/synthesize") - before["latency"] >= 3
    assert m("ttsd_audio_seconds_total") > before["audio"]
    text_metrics = httpx.get(f"{server.url}/metrics").text
    for name in ("ttsd_queue_depth", "ttsd_busy_slots", "ttsd_slots", "ttsd_synthesis_seconds_total"):
        assert name in text_metrics


def test_logs_are_json_with_ids_and_never_the_text(server: Server) -> None:
    marker = f"Zebra{time.time_ns()}quokka"
    with server.client() as client:
        response = client.post("/v1/synthesize", json={"text": f"Please say {marker} now."},
                               headers={"X-Request-Id": "req-ops-1"})  # fmt: skip
        assert response.headers["x-request-id"] == "req-ops-1"
        task = response.json()
        server.wait_task(task["task_id"])

    def logged() -> tuple[list[dict[str, Any]], set[str]]:
        """This request's access-log lines and this task's stages, from every process's log."""
        requests: list[dict[str, Any]] = []
        stages: set[str] = set()
        for path in server.log_path.parent.glob("*.log"):
            if path.name == "redis.log":
                continue
            text = path.read_text(errors="replace")
            # Every line whole so far is one JSON event, the HTTP server's, Celery's and Python's
            # warnings included: a log shipper parses the stream line by line.
            for line in text[: text.rfind("\n") + 1].splitlines():
                assert marker not in line, f"request text leaked into {path.name}"
                assert line.startswith('{"ts"'), f"a line of {path.name} is not a JSON event: {line!r}"
                event = json.loads(line)
                if event.get("event") == "request" and event.get("request_id") == "req-ops-1":
                    requests.append(event)
                elif event.get("event") == "job stage" and event.get("task_id") == task["task_id"]:
                    stages.add(event["stage"])
        return requests, stages

    def complete() -> tuple[list[dict[str, Any]], set[str]] | None:
        requests, stages = logged()
        return (requests, stages) if requests and {"synthesizing", "encoding", "storing"} <= stages else None

    # The access log is written in batches and, in distributed mode, the stages by other processes:
    # both reach their files some time after the task is done.
    requests, stages = wait_for(
        complete,
        timeout=10,
        retry_on=(ValueError,),  # a long line read while it was being written
        message=lambda: f"request line or job stages not logged: {logged()!r}",
    )
    assert requests and requests[0]["task_id"] == task["task_id"] and requests[0]["key"] == task["key"]
    assert requests[0]["text_length"] > 10 and requests[0]["status"] == 202 and "latency_ms" in requests[0]
    assert {"synthesizing", "encoding", "storing"} <= stages


@pytest.mark.slow
def test_sigterm_finishes_accepted_jobs_and_the_cache_survives(tmp_path: Path) -> None:
    srv = start_server(tmp_path, env={"TTSD_ENGINES": "piper"})
    bodies = [{"text": unique(f"Shutdown test {i}. " + "It has a few sentences. " * 3)} for i in range(10)]
    with srv.client() as client, ThreadPoolExecutor(10) as pool:
        accepted = list(pool.map(lambda b: client.post("/v1/synthesize", json=b), bodies))
    assert all(r.status_code == 202 for r in accepted)
    srv.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once its graceful shutdown is over, as servers conventionally do.
    assert srv.process.wait(timeout=120) in (0, -signal.SIGTERM)
    assert "draining accepted jobs" in srv.log()
    restarted = start_server(tmp_path, env={"TTSD_ENGINES": "piper"})
    try:
        with restarted.client() as client:
            for body in bodies:
                assert client.post("/v1/synthesize", json=body).status_code == 200, body
    finally:
        stop_server(restarted)


@pytest.mark.parametrize("http_server", ["granian", "uvicorn"])
def test_a_second_serve_on_a_taken_port_refuses_to_start(
    server: Server, tmp_path: Path, http_server: str
) -> None:
    """granian listens with SO_REUSEPORT: without a check, a second ``ttsd serve`` on the port
    would start and take a share of the first one's connections."""
    host, port = server.url.removeprefix("http://").split(":")
    second = ttsd(tmp_path, "serve", "--host", host, "--port", port, "--server", http_server)
    assert second.returncode == 1
    assert f"ttsd: address_in_use: {host}:{port} is taken" in second.stderr
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200


def ttsd(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **base_env(tmp),
        "TTSD_ENGINES": "hibari,espeak",
        "TTSD_DEFAULT_VOICE": "en-heart",
        "TTSD_ENGINE_SLOTS": "1",
    }
    return subprocess.run([sys.executable, "-m", "ttsd.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.mark.slow
def test_warm_batch_and_cache_commands(tmp_path: Path) -> None:
    hot = tmp_path / "hot.txt"
    hot.write_text("# greetings\nHello and welcome.\nThanks for calling.\n\nGoodbye for now.\n")
    warmed = ttsd(tmp_path, "warm", str(hot), "-f", "mp3,ogg")
    assert warmed.returncode == 0, warmed.stderr
    assert "6/6" in warmed.stderr
    stats = ttsd(tmp_path, "cache", "stats")
    assert "9 files" in stats.stdout, stats.stdout  # 3 masters + 6 encodes
    again = ttsd(tmp_path, "warm", str(hot), "-f", "mp3,ogg")
    assert "(6 cached" in again.stderr

    # A line in another script than the default voice's is spoken in its own language.
    out = tmp_path / "out"
    lines = tmp_path / "lines.txt"
    # A line that is a <speak> document is SSML.
    document = '<speak>Order <say-as interpret-as="digits">4521</say-as><break time="800ms"/>ships.</speak>'
    lines.write_text(f"First line to speak.\nSecond line to speak.\n您好，请问有什么可以帮您？\n{document}\n")
    first = ttsd(tmp_path, "batch", str(lines), "--out", str(out), "-f", "wav")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == ["00001.wav", "00002.wav", "00003.wav", "00004.wav"]
    assert soundfile.info(str(out / "00004.wav")).duration > 2.0

    # The service finds what warm and batch made: the Mandarin line under Mandarin's voice.
    srv = start_server(tmp_path, env={"TTSD_ENGINES": "hibari,espeak", "TTSD_DEFAULT_VOICE": "en-heart"})
    try:
        hit = httpx.post(f"{srv.url}/v1/synthesize", json={"text": "Thanks for calling.", "format": "ogg"})
        assert hit.status_code == 200
        zh = {"text": "您好，请问有什么可以帮您？", "format": "wav", "language": "zh"}
        assert httpx.post(f"{srv.url}/v1/synthesize", json=zh).status_code == 200
        ssml = {"text": document, "format": "wav"}
        assert httpx.post(f"{srv.url}/v1/synthesize", json=ssml).status_code == 200
    finally:
        stop_server(srv)
    (out / "00002.wav").unlink()
    resumed = ttsd(tmp_path, "batch", str(lines), "--out", str(out), "-f", "wav")
    assert resumed.returncode == 0 and "3 from an earlier run" in resumed.stderr and "1/1" in resumed.stderr
    assert (out / "00002.wav").stat().st_size > 1000

    purged = ttsd(tmp_path, "cache", "purge", "--all")
    assert purged.returncode == 0 and "purged" in purged.stdout
    assert "0 files" in ttsd(tmp_path, "cache", "stats").stdout
    assert not [p for p in (tmp_path / "data" / "audio").rglob("*") if p.is_file()]
