"""``python -m bench hits``: what a cache hit costs, side by side in one run.

wrk (Debian's, installed when missing) drives 64 connections from 2 threads on the same cores as
the server, against:

- ttsd embedded, under granian (the default) and under uvicorn: ``POST /v1/synthesize`` hits,
  ``POST /v1/audio/speech`` hits and ``GET /v1/audio/{id}`` for a file of about 60 KB, and
  ``GET /v1/tasks/{id}`` polls; with API keys, a per-key rate limit, metrics and the JSON access
  log all on;
- ttsd distributed (index and task board in Redis, audio in S3 behind presigned URLs, one Celery
  worker), under granian: the same synthesis hits and task polls;
- hits over a working set (``working_set.py``): 20,000 distinct cached texts, each request picking
  one uniformly (embedded and distributed) or by Zipf's law (embedded), beside one text measured
  again in the same minutes; the ratio and P99 are set against the target (0.8x, 10 ms);
- the references, under both servers: a raw ASGI app answering a constant, a minimal FastAPI app
  (pydantic body, dict lookup, JSON answer), Starlette's FileResponse of the same file;
- memory: the API process's RSS over a million hits (at the half and at the end).

Results go to ``bench/results/hits.{md,json}`` and the README's table.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from ttsd.config import Settings
from ttsd.links import Links
from ttsd.store.base import object_name

from .common import ROOT, commit, free_port, machine, publish, ttsd_process
from .hits_report import BESIDE, PICKS, render
from .working_set import WORKING_SET, check_hits, seed, working_set
from .wrk import CONNECTIONS, SECONDS, THREADS, WARMUP_SECONDS, Load, Pick, ensure_wrk, wrk, wrk_over

MILLION = 1_000_000
KEY = "bench-key"
HOT = {"text": "Thank you for calling. Please hold.", "voice": "en-joe", "format": "mp3"}
# About 60 KB of mp3: the size of a typical support-bot answer's file.
LONG = {
    "text": (
        "Thank you for calling the support line. Your order has shipped and should arrive within "
        "three to five business days. You can follow it with the tracking link we sent by email."
    ),
    "voice": "en-joe",
    "format": "mp3",
}
TTSD_ENV = {
    "TTSD_API_KEYS": KEY,
    "TTSD_RATE_LIMIT": "1000000",  # on, and never the bottleneck: its cost is what is measured
    "TTSD_LOG_FORMAT": "json",
    "TTSD_LOG_LEVEL": "INFO",
    "TTSD_ENGINES": "piper",
    "TTSD_ENGINE_SLOTS": "1",
}
AUTH = {"Authorization": f"Bearer {KEY}"}


def _wait_ready(url: str, path: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            httpx.get(url + path, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


@contextmanager
def peer(server: str, target: str, tmp: Path, **env: str) -> Iterator[str]:
    """A reference app (bench/peers.py) under uvicorn (httptools, uvloop) or granian."""
    port = free_port()
    if server == "uvicorn":
        args = ["-m", "uvicorn", target, "--port", str(port), "--log-level", "warning", "--no-access-log"]
    else:
        args = ["-m", "granian", "--interface", "asgi", "--port", str(port), "--log-level", "warning", target]
    log = (tmp / f"peer-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=log,
        start_new_session=True,  # granian forks a worker: stop the whole group
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, "/", process)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # granian's sometimes hangs on its worker
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()


def _done(client: httpx.Client, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Synthesize ``body`` and wait until it is a cache hit: the hit's answer, and the task that
    made it (finished, still pollable)."""
    first: dict[str, Any] = client.post("/v1/synthesize", json=body).json()
    task_id = first.get("task_id")
    if task_id is None:
        raise RuntimeError(f"{body['text'][:30]!r} was cached before the bench: {first}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if client.get(f"/v1/tasks/{task_id}").json()["status"] == "done":
            return client.post("/v1/synthesize", json=body).json(), task_id
        time.sleep(0.1)
    raise RuntimeError(f"no cache hit for {body['text'][:30]!r}")


def _ttsd_loads(url: str, pid: int, *, files: bool) -> dict[str, Load]:
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        _, task_id = _done(client, HOT)
        long, _ = _done(client, LONG)
    loads = {
        "synthesize hit": wrk(f"{url}/v1/synthesize", method="POST", body=HOT, headers=AUTH, pid=pid),
        "task poll": wrk(f"{url}/v1/tasks/{task_id}", headers=AUTH, pid=pid),
    }
    if files:
        speech = {"input": LONG["text"], "voice": "en-joe", "response_format": "mp3"}
        audio_path = httpx.URL(long["url"]).path
        loads["speech hit (file)"] = wrk(
            f"{url}/v1/audio/speech", method="POST", body=speech, headers=AUTH, pid=pid
        )
        loads["audio file GET"] = wrk(f"{url}{audio_path}", pid=pid)
    return loads


def _over_working_set(url: str, pid: int, picks: tuple[Pick, ...], settings: Settings) -> dict[str, Load]:
    """Hits over WORKING_SET distinct cached texts, picked uniformly or by Zipf's law, seeded into
    the deployment ``settings`` describes with the audio of the one-text rows' text."""
    bodies = working_set(WORKING_SET, voice=HOT["voice"], fmt=HOT["format"])
    seconds = seed(bodies, settings, HOT) + check_hits(url, bodies, AUTH)
    print(f"{len(bodies):,} texts cached in {seconds:.0f} s", file=sys.stderr)
    # Right after check_hits, which read every text (as a working set in use is read): a run
    # started later would first meet texts unread for longer than the memory serves them unasked
    # (TTSD_RECENT_REVALIDATE), the start of a cold cache rather than a working set in use.
    loads = {}
    for pick in picks:
        over = wrk_over(f"{url}/v1/synthesize", bodies, pick, headers=AUTH, pid=pid)
        loads[f"synthesize hit, {PICKS[pick]} over {WORKING_SET:,} texts"] = over
    # One text again, in the same minutes and with the working set remembered: what the rows over
    # the working set are held against.
    loads[BESIDE] = wrk(f"{url}/v1/synthesize", method="POST", body=HOT, headers=AUTH, pid=pid)
    return loads


def _file_of(url: str, data_dir: Path) -> Path:
    key = httpx.post(f"{url}/v1/synthesize", json=LONG, headers=AUTH, timeout=60).json()["key"]
    links = Links.of(Settings(data_dir=data_dir))  # the secret the server made there
    folder = (data_dir / "audio" / object_name(key, "mp3", links.object_tag(key))).parent
    return next(folder.glob("audio-*.mp3"))  # named by its bytes too


def run() -> dict[str, Any]:
    ensure_wrk()
    rows: dict[str, dict[str, Load]] = {}
    notes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for server in ("granian", "uvicorn"):
            data = tmp / f"embedded-{server}" / "data"
            data.mkdir(parents=True)
            with ttsd_process(data, "--server", server, **TTSD_ENV) as (url, process):
                for name, load in _ttsd_loads(url, process.pid, files=True).items():
                    rows.setdefault(f"ttsd embedded: {name}", {})[server] = load
                audio_file = _file_of(url, data)
                notes["file_bytes"] = audio_file.stat().st_size
                if server == "granian":
                    rate = rows["ttsd embedded: synthesize hit"][server].rps
                    half, first = _hits(url, process.pid, MILLION // 2, rate)
                    rest, last = _hits(url, process.pid, MILLION // 2, rate)
                    rows["ttsd embedded: synthesize hit, sustained (2nd half of 1M)"] = {server: last}
                    notes["memory"] = {
                        "hits": half + rest,
                        "rss_half_mb": first.rss_mb,
                        "rss_end_mb": last.rss_mb,
                    }
                    deployment = _settings_of({**TTSD_ENV, "TTSD_DATA_DIR": str(data)})
                    over = _over_working_set(url, process.pid, ("uniform", "zipf"), deployment)
                    for name, load in over.items():
                        rows[f"ttsd embedded: {name}"] = {server: load}
            kept = tmp / "bench.mp3"
            shutil.copy(audio_file, kept)
        for server in ("granian", "uvicorn"):
            with peer(server, "bench.peers:raw", tmp) as url:
                rows.setdefault("raw ASGI app (constant)", {})[server] = wrk(
                    f"{url}/v1/synthesize", method="POST", body=HOT
                )
            with peer(server, "bench.peers:minimal", tmp) as url:
                rows.setdefault("minimal FastAPI app (pydantic body, dict lookup)", {})[server] = wrk(
                    f"{url}/v1/synthesize", method="POST", body=HOT
                )
            with peer(server, "bench.peers:files", tmp, BENCH_FILE=str(kept)) as url:
                rows.setdefault("minimal Starlette FileResponse (same file)", {})[server] = wrk(f"{url}/file")
        for name, load in _distributed(tmp).items():
            rows.setdefault(f"ttsd distributed: {name}", {})["granian"] = load
    result = {
        "scenario": "hits",
        "commit": commit(),
        "machine": machine(),
        "wrk": f"-t{THREADS} -c{CONNECTIONS} -d{SECONDS}s (after {WARMUP_SECONDS} s of warm-up), same cores",
        "notes": notes,
        "rows": {name: {server: asdict(load) for server, load in by.items()} for name, by in rows.items()},
    }
    publish("hits", result, render(result))
    return result


def _hits(url: str, pid: int, at_least: int, rate: float) -> tuple[int, Load]:
    """Send at least ``at_least`` hits (besides the warm-ups); how many, and the last run."""
    sent, load = 0, None
    while load is None or sent < at_least:
        seconds = max(5, int((at_least - sent) / max(rate, 1.0) * 1.1) + 1)
        load = wrk(f"{url}/v1/synthesize", method="POST", body=HOT, headers=AUTH, seconds=seconds, pid=pid)
        sent += load.requests
    return sent, load


def _settings_of(env: dict[str, str]) -> Settings:
    return Settings(**{name[5:].lower(): value for name, value in env.items() if name.startswith("TTSD_")})


def _distributed(tmp: Path) -> dict[str, Load]:
    from tests.servers import start_server, stop_server
    from tests.stack import start_stack  # the tests' real Redis, S3, workers

    stack_dir = tmp / "stack"
    stack_dir.mkdir()
    stack = start_stack(stack_dir, workers=1, env=TTSD_ENV)
    try:
        server = start_server(stack_dir, env=stack.env, name="api")
        try:
            loads = _ttsd_loads(server.url, server.process.pid, files=False)
            over = _over_working_set(server.url, server.process.pid, ("uniform",), _settings_of(stack.env))
            return loads | over
        finally:
            stop_server(server)
    finally:
        stack.stop()
