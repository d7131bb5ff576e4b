"""``python -m bench index``'s report: the SQLite cache index at its budget, before and after."""

from __future__ import annotations

from typing import Any

from .common import table


def render(result: dict[str, Any]) -> str:
    facts = result["machine"]
    head = (
        "entries",
        "index",
        "stores",
        "evict mean / P99 (ms)",
        "get P50 / P99 (µs)",
        "get while storing P50 / P99 / max (µs)",
    )
    rows: list[tuple[str, ...]] = [head]
    for r in sorted(result["rows"], key=lambda r: (r["entries"], r["index"] != "before")):
        rows.append(
            (
                f"{r['entries']:,}",
                r["index"],
                str(r["stores"]),
                f"{r['evict_mean_ms']:.3f} / {r['evict_p99_ms']:.3f}",
                f"{r['get_p50_us']:.0f} / {r['get_p99_us']:.0f}",
                f"{r['busy_get_p50_us']:.0f} / {r['busy_get_p99_us']:.0f} / {r['busy_get_max_us']:.0f}",
            )
        )
    return "\n".join(
        [
            "## Cache index at its budget (embedded SQLite)",
            "",
            f"Commit {result['commit']}, {facts['cores']} cores ({facts['cpu']}),"
            f" {result['seconds']:.0f} s in all.",
            f"Entries of {result.get('entry_bytes', 10_000) // 1000} kB, the budget full:"
            " each store puts one and evicts one.",
            "before: one connection behind one lock, a SUM and a sorted read of the whole table per",
            "eviction; after: totals kept by triggers, victims off an LRU index in batches, lookups on",
            "connections of their own. Gets while storing: one every millisecond while another thread",
            "stores back to back.",
            "",
            table(rows),
            "",
        ]
    )
