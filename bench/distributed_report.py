"""``bench.distributed``'s results as the table and lines of ``bench/results/distributed.md``."""

from __future__ import annotations

from statistics import median
from typing import Any

from .common import table


def _spread(values: list[float], unit: str = "") -> str:
    """The median, with the range when the run was repeated."""
    mid = f"{median(values):.2f}{unit}"
    if len(values) < 2:
        return mid
    return f"{mid} ({min(values):.2f} to {max(values):.2f})"


def _efficiencies(runs: list[dict[str, Any]]) -> list[float]:
    return [r["bare_seconds"] / r["seconds"] for r in runs]


def _row(name: str, runs: list[dict[str, Any]], sentences: int) -> tuple[str, ...]:
    outside = median(1000 * (r["seconds"] - r["bare_seconds"]) / sentences for r in runs)
    return (
        name,
        f"{median(r['seconds'] for r in runs):.2f}",
        f"{median(r['bare_seconds'] for r in runs):.2f}",
        _spread(_efficiencies(runs)),
        f"{outside:.1f}",
    )


_CPU = ("worker", "engine processes", "api", "redis", "s3")


def _cpu_row(name: str, runs: list[dict[str, Any]]) -> tuple[str, ...]:
    """Per job over every repeat of the run."""
    jobs = sum(r["jobs"] for r in runs)
    per_job = (f"{1000 * sum(r['cpu'][k] for r in runs) / jobs:.0f}" for k in _CPU)
    kept = f"{sum(r['redis_memory_growth'] for r in runs) / jobs / 1000:.0f} KB"
    commands = sum(r["redis_commands"] for r in runs) / jobs
    objects = sum(r["objects"] for r in runs) / jobs
    idle = f"{100 * median(r['idle'] for r in runs):.0f} %"
    return (name, *per_job, idle, f"{commands:.0f}", f"{objects:.1f}", kept)


def render(r: dict[str, Any]) -> str:
    e, p, emb = r["espeak"], r["piper"], r["embedded"]
    n = r["texts"] * r["sentences_per_text"]
    n_piper = r["piper_texts"] * r["sentences_per_text"]
    rows = [
        ("run (each against the bare loop on its own sentences)", "s", "bare loop, s", "slot efficiency",
         "outside synthesis, ms/sentence"),
        (f"eSpeak, {r['texts']} texts x 8 new sentences: embedded, one slot", *_row("", emb["eight"], n)[1:]),
        _row("distributed, one worker of one slot", e["one worker"], n),
        _row("distributed, two workers of one slot", e["two workers"], n),
        (f"Piper, {r['piper_texts']} texts x 8: distributed, one worker of one slot",
         *_row("", p["one worker"], n_piper)[1:]),
        _row("distributed, two workers of one slot", p["two workers"], n_piper),
    ]  # fmt: skip
    cpu_rows = [
        (
            "distributed run: CPU ms per job",
            "worker (outside its engines)",
            "engine processes",
            "API",
            "Redis",
            "SeaweedFS",
            "cores idle",
            "Redis commands per job",
            "objects per text",
            "Redis memory kept per job",
        ),
        _cpu_row("eSpeak, one worker", e["one worker"]),
        _cpu_row("eSpeak, two workers", e["two workers"]),
        _cpu_row("eSpeak, one-sentence texts", e["short"]),
        _cpu_row("Piper, one worker", p["one worker"]),
        _cpu_row("Piper, two workers", p["two workers"]),
    ]
    m = r["machine"]
    scale = median(_efficiencies(e["two workers"])) / median(_efficiencies(e["one worker"]))
    piper_scale = median(_efficiencies(p["two workers"])) / median(_efficiencies(p["one worker"]))
    pairs = list(zip(emb["short"], e["short"], strict=True))
    short = r["short_texts"]
    return (
        "## Distributed mode's cost outside synthesis\n\n"
        f"commit {r['commit']}, {m['cpu']} x {m['cores']} cores"
        f"{' (' + m['scheduler'] + ')' if m.get('scheduler') else ''}, {r['seconds'] / 60:.1f} minutes. "
        f"Each eSpeak run {r['repeats']} times on new texts: medians, with the range in brackets.\n\n"
        f"{table(rows)}\n\n"
        f"- Scale-out: a second one-slot worker, {r['texts']} more such texts: {scale:.2f}x one worker's "
        f"throughput (target ≥ 1.7x), from the medians' efficiencies. With Piper ({r['piper_texts']} more "
        f"texts): {piper_scale:.2f}x.\n"
        f"- One-sentence texts, {short} at once, the same texts in both modes: embedded "
        f"{median(short / a['seconds'] for a, _ in pairs):.0f} jobs/s, distributed "
        f"{median(short / b['seconds'] for _, b in pairs):.0f} jobs/s: "
        f"{_spread([a['seconds'] / b['seconds'] for a, b in pairs], 'x')} (target ≥ 0.7x).\n"
        "- Targets (issue 29): distributed slot efficiency ≥ 0.7 with eSpeak (embedded's 0.83), ≥ 0.95 "
        "with Piper.\n\n"
        f"{table(cpu_rows)}\n"
    )
