"""The suite's results as pictures and markdown (``bench/results/RESULTS.md``)."""

from __future__ import annotations

from typing import Any

from .common import RESULTS, table


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

- ttsd throughput / Piper's HTTP server, closed loop {r["bot_users"]} users: **{r["throughput_ratio_vs_piper"]:.1f}x** (target >= 2x)
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
