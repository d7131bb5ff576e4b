"""``bench.reuse``'s third run: a near-hit's latency, and the first audio of a stream whose first
sentence is cached, or new (beside the bare engine speaking it)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import httpx

from .common import ttsd_server
from .reuse_measure import PIPER_ENV, bare_engine_checked, outside_cpu

LATENCY_TRIALS = 20

_WARM = (
    ("Thanks for calling.", "I have found your account.", "Is there anything else I can help you with?"),
    ("Thank you for contacting customer support.", "We received your documents.", "Have a great day."),
    ("Thank you for your patience.", "You are next in line.", "An agent will be with you shortly."),
    ("We are sorry for the inconvenience.", "Please stay on the line.",
     "We have also sent the details to your email address."),
)  # fmt: skip


def _first_audio(client: httpx.Client, text: str) -> tuple[float, float, int]:
    """Seconds to the first non-empty chunk and to the last, and the status, of a streamed text."""
    body = {"input": text, "voice": "en-joe", "response_format": "pcm"}
    started = time.perf_counter()
    first = 0.0
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        for chunk in response.iter_raw():
            if chunk and not first:
                first = time.perf_counter() - started
        status = response.status_code
    return first, time.perf_counter() - started, status


def latency_run(tmp: Path) -> dict[str, Any]:
    cached = [s for text in _WARM for s in text]
    warm_texts = {" ".join(t) for t in _WARM}
    combos = [
        " ".join(c)
        for c in itertools.islice(itertools.permutations(cached, 3), 0, None, 23)
        if " ".join(c) not in warm_texts
    ]
    near: dict[str, list[float]] = {"wav": [], "mp3": []}
    near_bad: list[str] = []
    ttfa_cached: list[float] = []
    ttfa_new: list[float] = []
    stream_bad: list[int] = []
    new_first = [f"Thanks for calling about reference {70_000 + i}." for i in range(LATENCY_TRIALS + 2)]
    outside_before = outside_cpu()
    with ttsd_server(tmp / "latency", **PIPER_ENV) as url, httpx.Client(base_url=url, timeout=120) as client:
        for warm in _WARM:
            body = {"input": " ".join(warm), "voice": "en-joe", "response_format": "wav"}
            client.post("/v1/audio/speech", json=body).raise_for_status()
        trial = 0
        for fmt in ("wav", "mp3"):
            for i in range(LATENCY_TRIALS + 2):
                request = {"text": combos[trial], "voice": "en-joe", "format": fmt}
                trial += 1
                started = time.perf_counter()
                response = client.post("/v1/synthesize", json=request)
                took = time.perf_counter() - started
                answer = response.json()
                if response.status_code != 200 or answer.get("sentences_reused") != answer.get("sentences"):
                    near_bad.append(f"{response.status_code} {answer}")
                if i >= 2:  # warm-up excluded
                    near[fmt].append(took)
        for i in range(LATENCY_TRIALS + 2):
            # First sentence cached, a new one after it, then cached ones.
            first, _, status = _first_audio(
                client,
                f"{cached[0]} Your reference number is {50_000 + i}. {cached[1]} {cached[2]}",
            )
            if status != 200:
                stream_bad.append(status)
            if i >= 2:
                ttfa_cached.append(first)
        for i in range(LATENCY_TRIALS + 2):
            # Everything after the first sentence cached, the first one new.
            first, _, status = _first_audio(client, f"{new_first[i]} {cached[1]} {cached[2]}")
            if status != 200:
                stream_bad.append(status)
            if i >= 2:
                ttfa_new.append(first)
    other = max(0.0, outside_cpu() - outside_before)
    bare, bare_other = bare_engine_checked("piper", "en-joe", new_first[2:])
    return {
        "near_hit_seconds": near,
        "near_hit_anomalies": near_bad,
        "first_audio_cached_first_sentence": ttfa_cached,
        "first_audio_new_first_sentence": ttfa_new,
        "bare_first_sentence": bare,
        "bare_other_cpu_seconds": bare_other,
        "stream_errors": stream_bad,
        "other_cpu_seconds": other,
    }
