"""``python -m bench hits``'s report: its table and the ratios against its targets."""

from __future__ import annotations

from typing import Any

from .common import table
from .working_set import WORKING_SET

PICKS = {"uniform": "uniform", "zipf": "Zipf"}
BESIDE = f"synthesize hit, one text (beside the {WORKING_SET:,})"
# Hits over a working set of many texts, against hits on one text: at least this ratio, P99 at most.
TARGET_RATIO, TARGET_P99_MS = 0.8, 10.0


def render(result: dict[str, Any]) -> str:
    rows = result["rows"]
    header = ("what answers", "server", "req/s", "P50", "P99", "errors", "API RSS")
    table_rows = [header]
    for name, by in rows.items():
        for server, load in by.items():
            rss = f"{load['rss_mb']:.0f} MB" if load.get("rss_mb") else ""
            table_rows.append((name, server, f"{load['rps']:,.0f}", f"{load['p50_ms']:.2f} ms",
                               f"{load['p99_ms']:.2f} ms", str(load["errors"]), rss))  # fmt: skip
    hit = rows["ttsd embedded: synthesize hit"]
    minimal = rows["minimal FastAPI app (pydantic body, dict lookup)"]
    dist = rows["ttsd distributed: synthesize hit"]["granian"]
    memory = result["notes"].get("memory", {})
    best_minimal = max(minimal["uvicorn"]["rps"], minimal["granian"]["rps"])
    ratios = [
        f"- ttsd hit (granian) / minimal FastAPI on its better server: "
        f"{hit['granian']['rps'] / best_minimal:.2f}x",
        f"- distributed / embedded (both granian): {dist['rps'] / hit['granian']['rps']:.2f}x",
        f"- granian / uvicorn for ttsd hits: {hit['granian']['rps'] / hit['uvicorn']['rps']:.2f}x",
    ]
    for mode in ("embedded", "distributed"):
        one = rows.get(f"ttsd {mode}: {BESIDE}", {}).get("granian")
        for pick in PICKS.values():
            over = rows.get(f"ttsd {mode}: synthesize hit, {pick} over {WORKING_SET:,} texts", {}).get(
                "granian"
            )
            if one and over:
                ratios.append(
                    f"- {mode}, {pick} over {WORKING_SET:,} cached texts / one text: "
                    f"{over['rps'] / one['rps']:.2f}x, P99 {over['p99_ms']:.1f} ms "
                    f"(target: at least {TARGET_RATIO}x, P99 at most {TARGET_P99_MS:g} ms)"
                )
    if memory:
        growth = (memory["rss_end_mb"] / memory["rss_half_mb"] - 1) * 100
        ratios.append(
            f"- API RSS after {memory['hits']:,} hits: {memory['rss_end_mb']:.0f} MB "
            f"({memory['rss_half_mb']:.0f} MB at the half: {growth:+.1f} % over the second half)"
        )
    m = result["machine"]
    return (
        f"## Cache hits (`python -m bench hits`)\n\n"
        f"commit {result['commit']}, {m['cpu']} x {m['cores']} cores, "
        f"wrk {result['wrk']}; ttsd with API keys, a per-key rate limit, metrics and the JSON access log "
        f"on; file {result['notes'].get('file_bytes', 0) / 1024:.0f} KB (mp3).\n\n"
        f"{table(table_rows)}\n\n" + "\n".join(ratios) + "\n"
    )
