"""``python -m bench pools``'s report: isolation between pools, and each layout's memory."""

from __future__ import annotations

from typing import Any

from .common import table


def _fmt(value: float) -> str:
    return "n/a" if value != value else f"{value:.0f}"


def render(result: dict[str, Any]) -> str:
    facts, load = result["machine"], result["load"]
    isolation, memory = result["isolation"], result["memory"]
    rows: list[tuple[str, ...]] = [
        (
            "run",
            "pools",
            "piper ok / refused",
            "piper queue wait P50 / P99 / max (ms)",
            "piper latency P50 / P99 (ms)",
            "Kokoro backlog accepted; waiting at start / end",
        )
    ]
    for r in isolation:
        rows.append(
            (
                r["name"],
                f"`{r['pools']}`",
                f"{r['piper_ok']} / {r['piper_refused']}",
                f"{r['queue_wait_p50_ms']:.1f} / {r['queue_wait_p99_ms']:.1f} / {r['queue_wait_max_ms']:.1f}",
                f"{_fmt(r['latency_p50_ms'])} / {_fmt(r['latency_p99_ms'])}",
                f"{r['kokoro_backlog_accepted']} of {r['kokoro_backlog_sent']};"
                f" {_fmt(r['kokoro_waiting_at_start'])} / {_fmt(r['kokoro_waiting_at_end'])}",
            )
        )
    mem_rows: list[tuple[str, ...]] = [
        ("layout", "engine processes (MB RSS each)", "total RSS, server included (MB)")
    ]
    for name, m in memory["layouts"].items():
        mem_rows.append(
            (name, ", ".join(f"{x:.0f}" for x in m["engine_processes_mb"]), f"{m['total_mb']:.0f}")
        )
    slot_rows: list[tuple[str, ...]] = [
        ("engine", "one slot's process (MB RSS, after warm-up)", "start to ready (s)")
    ]
    for engine, mb in memory["per_engine_slot_mb"].items():
        slot_rows.append((engine, f"{mb:.0f}", f"{memory['ready_seconds'][engine]:.1f}"))
    lines = [
        "## Pools: isolation and memory",
        "",
        f"Commit {result['commit']}, {facts['cores']} cores ({facts['cpu']}),"
        f" {result['seconds']:.0f} s in all.",
        f"Piper load: {load['piper_rate']:g} requests/s for {load['piper_seconds']:g} s, open loop,"
        " `/v1/audio/speech` (wav),",
        f"each a new one-sentence text; Kokoro backlog: {load['backlog']} long Japanese texts"
        " (6 sentences each)",
        "sent just before (the Kokoro queue sheds what would wait past `TTSD_MAX_WAIT`, 30 s). Default",
        "settings; each run starts with 3 replies per engine. Queue wait is accepted to synthesizing, as",
        "the server logs it per job.",
        "",
        table(rows),
        "",
        "Memory: the same 15 warm-up replies on each layout (3 per voice family), then RSS.",
        "",
        table(mem_rows),
        "",
        table(slot_rows),
        "",
    ]
    return "\n".join(lines)
