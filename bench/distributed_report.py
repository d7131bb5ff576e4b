"""``bench.distributed``'s results as the table and lines of ``bench/results/distributed.md``."""

from __future__ import annotations

from typing import Any

from .common import table


def _row(name: str, seconds: float, bare_seconds: float, sentences: int) -> tuple[str, ...]:
    outside = f"{1000 * (seconds - bare_seconds) / sentences:.1f}"
    return (name, f"{seconds:.2f}", f"{bare_seconds / seconds:.2f}", outside)


_CPU = ("worker", "engine processes", "api", "redis", "s3")


def _cpu_row(name: str, d: dict[str, Any]) -> tuple[str, ...]:
    jobs = d["jobs"]
    per_job = (f"{1000 * d['cpu'][k] / jobs:.0f}" for k in _CPU)
    memory = d.get("redis_memory_growth")
    kept = "–" if memory is None else f"{memory / jobs / 1000:.0f} KB"
    return (name, *per_job, f"{d['redis_commands'] / jobs:.0f}", f"{d['objects'] / jobs:.1f}", kept)


def render(r: dict[str, Any]) -> str:
    n, bare_s, e, piper = r["sentences"], r["bare_seconds"], r["espeak"], r["piper"]["one worker"]
    one, two, short = e["one worker"], e["two workers"], e["short"]
    piper_two = r["piper"].get("two workers")
    piper_bare = r["piper_bare_seconds"]
    rows = [
        ("run", "s", "slot efficiency", "outside synthesis, ms/sentence"),
        (f"eSpeak, {r['texts']} texts x 8 new sentences: bare loop", f"{bare_s:.2f}", "1.00", "–"),
        _row("embedded, one slot", r["embedded"]["eight"], bare_s, n),
        _row("distributed, one worker of one slot", one["seconds"], bare_s, n),
        (f"Piper, {r['piper_texts']} texts x 8: bare loop", f"{piper_bare:.2f}", "1.00", "–"),
        _row(
            "distributed, one worker of one slot",
            piper["seconds"],
            piper_bare,
            r["piper_texts"] * r["sentences_per_text"],
        ),
    ]
    cpu_rows = [
        (
            "distributed run: CPU ms per job",
            "worker (outside its engines)",
            "engine processes",
            "API",
            "Redis",
            "SeaweedFS",
            "Redis commands per job",
            "objects per text",
            "Redis memory kept per job",
        ),
        _cpu_row("eSpeak, one worker", one),
        _cpu_row("eSpeak, two workers", two),
        _cpu_row("eSpeak, one-sentence texts", short),
        _cpu_row("Piper, one worker", piper),
        *([_cpu_row("Piper, two workers", piper_two)] if piper_two else []),
    ]
    m = r["machine"]
    emb_short = r["short_texts"] / r["embedded"]["short"]
    piper_scale = (
        f" With Piper ({r['piper_texts']} more texts): {piper_two['seconds']:.2f} s, "
        f"{piper['seconds'] / piper_two['seconds']:.2f}x."
        if piper_two
        else ""
    )
    dist_short = r["short_texts"] / short["seconds"]
    return (
        "## Distributed mode's cost outside synthesis\n\n"
        f"commit {r['commit']}, {m['cpu']} x {m['cores']} cores, {r['seconds'] / 60:.1f} minutes.\n\n"
        f"{table(rows)}\n\n"
        f"- Scale-out: {r['texts']} more such texts with a second one-slot worker: {two['seconds']:.2f} s, "
        f"{one['seconds'] / two['seconds']:.2f}x one worker's throughput (target ≥ 1.7x).{piper_scale}\n"
        f"- One-sentence texts, {r['short_texts']} at once: embedded {emb_short:.0f} jobs/s, distributed "
        f"{dist_short:.0f} jobs/s ({dist_short / emb_short:.2f}x; target ≥ 0.7x).\n"
        "- Targets (issue 29): distributed slot efficiency ≥ 0.7 with eSpeak (embedded's 0.83), ≥ 0.95 "
        "with Piper.\n\n"
        f"{table(cpu_rows)}\n"
    )
