"""The soak's figures: first and last window compared, the checks, the table and the plot."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .common import RESULTS, commit, machine, publish, table
from .soak_traffic import Traffic
from .soak_watch import percentile

if TYPE_CHECKING:
    from .soak import Soak

LOST = ("failed", "unknown", "lost_at_restart", "unresolved")
COUNTS = ("sent", "accepted", "merged", "shed_503", "shed_without_retry_after", "other_errors",
          "transport_errors", "not_sent_down", *LOST)  # fmt: skip
# Flat within noise, last window against the first after the warm-up. A rate is a count of events
# in the window: two Poisson counts n1, n2 differ by sqrt(1/n1 + 1/n2) in log ratio (one sigma), so
# a rate is flat within two sigma of that, or within 25 %, whichever is wider. A P99 of a window's
# few dozen hits is near its maximum, and the 2-core machine is shared with the load itself.
RATE_SIGMAS, RATE_FLOOR = 2.0, 0.25
P99_FACTOR, P99_FLOOR_MS = 1.5, 5.0
RSS_FACTOR = 1.15


def _max(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return max(values) if values else math.nan


def window(state: Soak, start: float, end: float) -> dict[str, float]:
    span = max(end - start, 1e-9)
    inside = [s for s in state.samples if start < s["t"] <= end + 1e-6]
    answers = [kind for t, kind in state.answers if start <= t < end]
    jobs = sum(1 for t, _ in state.done if start <= t < end)
    return {
        "from_s": start,
        "to_s": end,
        "jobs": jobs,
        "hits": answers.count("hit"),
        "accepted_per_s": answers.count("accepted") / span,
        "jobs_per_s": jobs / span,
        "hits_per_s": answers.count("hit") / span,
        "hit_ratio": (answers.count("hit") + answers.count("assembled")) / max(len(answers), 1),
        "hit_p50_ms": percentile([lat for t, lat in state.hits if start <= t < end], 0.5) * 1000,
        "hit_p99_ms": percentile([lat for t, lat in state.hits if start <= t < end], 0.99) * 1000,
        "api_rss_mb": _max([s["api_rss_mb"] for s in inside]),
        "disk_mb": _max([s["disk_mb"] for s in inside]),
        "audio_mb": _max([s["disk_mb"] - s["index_mb"] for s in inside]),
    }


def warm_up(state: Soak, budget_mb: float, seconds: float) -> float:
    """When the data directory first held 90 % of the budget: the cache is full from then on."""
    return next((s["t"] for s in state.samples if s["disk_mb"] >= 0.9 * budget_mb), seconds)


def _ratio(last: float, first: float) -> float:
    return last / first if first else math.nan


def flatness(first: dict[str, float], last: dict[str, float], disk_limit_mb: float) -> dict[str, bool]:
    def in_band(key: str, count: str) -> bool:
        n1, n2 = first[count], last[count]
        if not n1 or not n2:
            return n1 == n2
        band = max(RATE_FLOOR, RATE_SIGMAS * math.sqrt(1 / n1 + 1 / n2))
        return abs(math.log(_ratio(last[key], first[key]))) <= band

    p99 = max(P99_FACTOR * first["hit_p99_ms"], first["hit_p99_ms"] + P99_FLOOR_MS)
    return {
        "jobs_per_s": in_band("jobs_per_s", "jobs"),
        "hits_per_s": in_band("hits_per_s", "hits"),
        "hit_p99_ms": last["hit_p99_ms"] <= p99,
        "api_rss_mb": last["api_rss_mb"] <= RSS_FACTOR * first["api_rss_mb"],
        "disk_mb": last["disk_mb"] <= disk_limit_mb,
    }


def summarise(
    config: dict[str, Any], slack: int, load: Traffic, state: Soak, rss_limit: float
) -> dict[str, Any]:
    seconds, period = config["seconds"], config["burst_every"]
    filled = warm_up(state, config["budget_bytes"] / 1e6, seconds)
    # Until the cache is full, hits grow and misses shrink: the first window compared is the first
    # whole period after that (and at least the second), and never past the one before the last.
    start = min(max(period, math.ceil(filled / period) * period), seconds - 2 * period)
    first, last = window(state, start, start + period), window(state, seconds - period, seconds)
    limit_mb = (config["budget_bytes"] + slack) / 1e6
    flat = flatness(first, last, limit_mb)
    after = state.restart.get("at_s", 0.0) + state.restart.get("down_s", 0.0)
    lost = sum(state.counts[k] for k in LOST)
    restart = state.restart
    restart_hits = restart.get("earlier_hits", 0) + restart.get("open_cached_after", 0)
    rss = {
        "limit_mb": rss_limit,
        **state.rss,
        "max_mb": _max([s["api_rss_mb"] for s in state.samples] + list(state.rss.values())),
        "engines_max_mb": _max([s["engines_rss_mb"] for s in state.samples]),
    }
    # "Near its start level": what the idle API process holds after the load, against what the same
    # process held when it became ready, before any request.
    near = 1.5 * rss.get("restart_start_mb", 0) + 20
    rss["returns_near_start"] = rss.get("idle_after_mb", math.nan) <= near
    disk = {
        "budget_mb": config["budget_bytes"] / 1e6,
        "slack_mb": slack / 1e6,
        "max_mb": _max([s["disk_mb"] for s in state.samples]),
        "index_max_mb": _max([s["index_mb"] for s in state.samples]),
        "audio_max_mb": _max([s["disk_mb"] - s["index_mb"] for s in state.samples]),
        "written_floor_mb": sum(state.file_sizes.values()) / 1e6,
    }
    checks = {
        "nothing_accepted_lost": lost == 0 and state.counts["accepted"] > 0,
        "disk_within_budget": disk["max_mb"] <= limit_mb,
        "working_set_over_budget": disk["written_floor_mb"] > disk["budget_mb"],
        "restart_answers_hits": restart_hits > 0,
        "no_server_errors_logged": not (restart.get("old_server_errors") or restart.get("new_server_errors")),
        "rss_under_limit": rss["max_mb"] <= rss_limit,
        "rss_returns_near_start": rss["returns_near_start"],
        "flat_within_noise": all(flat.values()),
    }
    return {
        "scenario": "soak",
        "commit": commit(),
        "machine": machine(),
        "config": config,
        "traffic": {
            "catalogue": load.catalogue,
            "requests": len(load.schedule),
            "zipf_s": load.zipf_s,
            "repeat_share": load.repeat_share,
            "zh_share": load.zh_share,
            "reply_sentences": load.sentences,
        },
        "counts": dict(state.counts),
        "lost": lost,
        "done": len(state.done),
        "failures": state.failures[:20],
        "cache_full_at_s": filled,
        "windows": {"first": first, "last": last, "after_restart": window(state, after, after + period)},
        "flat": flat,
        "latency": {
            "hit_p50_ms": percentile([lat for _, lat in state.hits], 0.5) * 1000,
            "hit_p99_ms": percentile([lat for _, lat in state.hits], 0.99) * 1000,
            "assembled_p99_ms": percentile([lat for _, lat in state.assembled], 0.99) * 1000,
            "job_p50_s": percentile([d for _, d in state.done], 0.5),
            "job_p99_s": percentile([d for _, d in state.done], 0.99),
        },
        "rss": rss,
        "disk": disk,
        "restart": state.restart,
        "checks": checks,
        "samples": state.samples,
    }


def _f(value: float, digits: int = 1) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    config, load, counts = result["config"], result["traffic"], result["counts"]
    first, last, flat = result["windows"]["first"], result["windows"]["last"], result["flat"]
    rss, disk, restart, checks = result["rss"], result["disk"], result["restart"], result["checks"]
    share = {n: c / load["catalogue"] for n, c in load["reply_sentences"].items()}
    head = (f"first ({first['from_s']:.0f}–{first['to_s']:.0f} s)",
            f"last ({last['from_s']:.0f}–{last['to_s']:.0f} s)")  # fmt: skip
    rows: list[tuple[str, ...]] = [("", *head, "last / first", "flat")]
    rows.append(("accepted/s (new jobs)", _f(first["accepted_per_s"], 2), _f(last["accepted_per_s"], 2),
                 _f(_ratio(last["accepted_per_s"], first["accepted_per_s"]), 2), "(demand)"))  # fmt: skip
    for key, label, digits in (("jobs_per_s", "jobs done/s", 2), ("hits_per_s", "hits/s", 2),
                               ("hit_p99_ms", "hit P99 (ms)", 1), ("api_rss_mb", "API RSS (MB, max)", 0),
                               ("disk_mb", "disk (MB, max)", 1)):  # fmt: skip
        ratio = _ratio(last[key], first[key])
        rows.append((label, _f(first[key], digits), _f(last[key], digits), _f(ratio, 2),
                     "yes" if flat[key] else "**no**"))  # fmt: skip
    verdict = (
        "flat within noise"
        if checks["flat_within_noise"]
        else "**not flat**: " + ", ".join(k for k, ok in flat.items() if not ok)
    )
    tally = [
        ("accepted", "merged", "done", "failed", "unknown", "lost at restart", "unresolved", "shed 503",
         "other errors", "not sent (down)"),
        (str(counts["accepted"]), str(counts["merged"]), str(result["done"]),
         *(str(counts[k]) for k in (*LOST, "shed_503", "other_errors", "not_sent_down"))),
    ]  # fmt: skip
    failed_checks = [k for k, ok in checks.items() if not ok]
    lines = [
        "## Soak: a day of support traffic, compressed",
        "",
        f"Commit {result['commit']}, {result['machine']['cores']} cores ({result['machine']['cpu']}); one"
        f" embedded `ttsd serve` (Piper and eSpeak NG, {config['slots']} slots),"
        f" {config['seconds']:.0f} s of load.",
        f"Traffic: {load['requests']} requests over a catalogue of {load['catalogue']:,} replies (sentences: "
        + ", ".join(f"{n}: {p:.0%}" for n, p in share.items())
        + f"), Zipf s = {load['zipf_s']:.3f}, {load['repeat_share']:.1%} repeats, {load['zh_share']:.0%}"
        f" Mandarin (eSpeak `zh-female`), the rest English (Piper `en-joe`), mp3 and wav;"
        f" {config['rate']:g} requests/s, {config['rate'] * config['burst_factor']:g}/s for"
        f" {config['burst_seconds']:g} s every {config['burst_every']:g} s.",
        f"Cache budget {disk['budget_mb']:.1f} MB (`TTSD_CACHE_MAX_BYTES`), slack {disk['slack_mb']:.1f} MB;"
        f" files written during the run ≥ {disk['written_floor_mb']:.0f} MB; the cache was full from"
        f" {result['cache_full_at_s']:.0f} s (the first window compared starts after that).",
        "",
        table(rows),
        "",
        f"Verdict: {verdict}. Hit P50/P99 over the run {_f(result['latency']['hit_p50_ms'])} /"
        f" {_f(result['latency']['hit_p99_ms'])} ms; accepted to done P50/P99"
        f" {_f(result['latency']['job_p50_s'], 2)} / {_f(result['latency']['job_p99_s'], 2)} s.",
        "",
        table(tally),
        "",
        f"Restart at {_f(restart.get('at_s', math.nan), 0)} s (SIGTERM, then a new process on the same data"
        f" dir; no requests for {_f(restart.get('down_s', math.nan))} s): {restart.get('open_at_stop', 0)}"
        f" tasks open at the stop, {restart.get('open_logged_done', 0)} of them logged done by its drain,"
        f" {restart.get('open_cached_after', 0)} answered as hits by the new process; of the last"
        f" {restart.get('earlier_asked', 0)} texts done before the stop, {restart.get('earlier_hits', 0)}"
        f" answered as hits; hit ratio in the period after it"
        f" {result['windows']['after_restart']['hit_ratio']:.0%}. Errors logged by the servers:"
        f" {len(restart.get('old_server_errors', [])) + len(restart.get('new_server_errors', []))}.",
        f"API RSS: max {_f(rss['max_mb'], 0)} MB (limit {rss['limit_mb']:.0f}); at start"
        f" {_f(rss.get('start_mb', math.nan), 0)} MB, the second process at start"
        f" {_f(rss.get('restart_start_mb', math.nan), 0)} MB and idle after the load"
        f" {_f(rss.get('idle_after_mb', math.nan), 0)} MB; engine processes together max"
        f" {_f(rss['engines_max_mb'], 0)} MB. Disk max {_f(disk['max_mb'])} MB: audio files up"
        f" to {_f(disk['audio_max_mb'])} MB, the SQLite index with its WAL (which the budget does not"
        f" count) up to {_f(disk['index_max_mb'])} MB.",
        "",
        "Checks: " + ("all passed" if not failed_checks else "**failed: " + ", ".join(failed_checks) + "**"),
        "",
        "![soak](soak.png)",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, restart = result["samples"], result["restart"]
    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    axes[0].plot(t, [s["jobs_per_s"] for s in samples], label="jobs done/s")
    axes[0].plot(t, [s["hits_per_s"] for s in samples], label="hits/s")
    axes[0].plot(t, [s["assembled_per_s"] for s in samples], label="assembled from sentences/s", alpha=0.6)
    axes[1].plot(t, [s["hit_p99_ms"] for s in samples], label="hit P99", marker=".")
    axes[1].plot(t, [s["hit_p50_ms"] for s in samples], label="hit P50", alpha=0.6)
    axes[2].plot(t, [s["api_rss_mb"] for s in samples], label="API process")
    axes[2].plot(t, [s["engines_rss_mb"] for s in samples], label="engine processes", alpha=0.6)
    axes[2].axhline(result["rss"]["limit_mb"], color="red", linestyle="--", label="400 MB target")
    axes[3].plot(t, [s["disk_mb"] for s in samples], label="data dir")
    axes[3].plot(t, [s["disk_mb"] - s["index_mb"] for s in samples], label="audio files", alpha=0.6)
    axes[3].axhline(result["disk"]["budget_mb"], color="red", linestyle="--", label="cache budget")
    limit = result["disk"]["budget_mb"] + result["disk"]["slack_mb"]
    axes[3].axhline(limit, color="red", linestyle=":", label="budget + slack")
    for ax, label in zip(axes, ("per second", "ms", "RSS (MB)", "MB"), strict=True):
        if restart:
            ax.axvspan(restart["at_s"], restart["at_s"] + restart["down_s"], color="grey", alpha=0.3)
        ax.set_ylabel(label)
        ax.legend(loc="upper left", fontsize="small")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"ttsd soak ({result['commit']}); grey: restart")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _json_safe(value: Any) -> Any:
    """NaN (no hit in an interval, no process while down) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def publish_soak(result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(result, RESULTS / "soak.png")
    publish("soak", _json_safe(result), markdown(result))
