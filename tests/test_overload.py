"""Open-loop overload at about four times the measured capacity: the service sheds the excess with
503 + Retry-After, finishes every job it accepted, and keeps answering cache hits."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .conftest import unique
from .servers import start_server, stop_server


@pytest.mark.slow
def test_open_loop_overload(tmp_path: Path) -> None:
    env = {"TTSD_ENGINES": "piper", "TTSD_ENGINE_SLOTS": "2", "TTSD_MAX_WAIT": "2"}
    srv = start_server(tmp_path, env=env)
    try:
        with srv.client(limits=httpx.Limits(max_connections=200)) as client:
            hot = {"text": "Thank you for calling. Please hold.", "format": "mp3"}
            srv.wait_task(client.post("/v1/synthesize", json=hot).json()["task_id"])

            # Capacity: jobs per second with both slots busy (two at a time, so none is shed).
            started = time.monotonic()
            for round_ in range(5):
                pair = [
                    client.post("/v1/synthesize", json={"text": unique(f"Probe {round_} {i}.")})
                    for i in range(2)
                ]
                for r in pair:
                    srv.wait_task(r.json()["task_id"])
            capacity = 10 / (time.monotonic() - started)

            # Open loop: arrivals on a fixed schedule whatever the responses, for four seconds. The
            # floor keeps it an overload when the probe ran while another test process held the CPU.
            rate = max(4 * capacity, 40.0)
            arrivals = int(4 * rate)
            misses: list[Future[httpx.Response]] = []
            hits: list[Future[httpx.Response]] = []
            with ThreadPoolExecutor(64) as pool:
                t0 = time.monotonic()
                for i in range(arrivals):
                    time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                    body = {"text": unique(f"Overload request {i}.")}
                    misses.append(pool.submit(client.post, "/v1/synthesize", json=body))
                    if i % 4 == 0:
                        hits.append(pool.submit(client.post, "/v1/synthesize", json=hot))
                responses = [f.result() for f in misses]
                hit_responses = [f.result() for f in hits]
        codes = [r.status_code for r in responses]
        assert set(codes) <= {202, 503}, sorted(set(codes))
        assert 503 in codes and 202 in codes, codes
        for r in responses:
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "overloaded" and int(r.headers["retry-after"]) >= 1
        assert all(r.status_code == 200 for r in hit_responses)  # hits are never shed
        accepted = [r.json()["task_id"] for r in responses if r.status_code == 202]
        assert all(srv.wait_task(t, timeout=180)["status"] == "done" for t in accepted)
    finally:
        stop_server(srv)
