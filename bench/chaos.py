"""Chaos: each fault of the chaos suite on one distributed deployment with the default settings, under
a steady load of hits (20/s) and misses (2/s), and what it cost: requests accepted, lost, refused
with a clear retryable error, the time until the jobs in flight finished, hit latency during the
fault. The same harness as ``tests/test_chaos.py`` (which asserts on it), so it needs the dev extras
(redis-server, SeaweedFS). Writes ``bench/results/chaos.md`` and the README's summary.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.chaos import HEADER, cluster, run_fault, summary_row
from tests.chaos_faults import faults
from tests.chaos_load import HITS_PER_SECOND, MISSES_PER_SECOND

from .common import RESULTS, commit, machine, publish, table


def run() -> dict[str, Any]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp)) as deployment:
        results = [run_fault(deployment, fault) for fault in faults()]
    facts = machine()
    rows = [tuple(HEADER), *(tuple(summary_row(r)) for r in results)]
    lines = [
        "## Chaos: faults under load, default settings",
        "",
        f"Commit {commit()}, {facts['cores']} cores ({facts['cpu']}),"
        f" {time.monotonic() - started:.0f} s in all.",
        "Two API processes, two workers with one engine slot each, Redis and SeaweedFS on this machine;",
        f"load: {HITS_PER_SECOND:g} hits/s over 6 cached texts and {MISSES_PER_SECOND:g} new texts/s,",
        "sent round robin to both API processes (one that does not answer is skipped, as a load",
        "balancer would). Each fault starts after 2 s of load, lasts as shown, and the load goes on",
        "5 s after it is healed.",
        "",
        table(rows),
        "",
        "What the columns mean: *refused* are answers 503 with `Retry-After` and a JSON error",
        "(`backend_unavailable` while Redis is away, `overloaded` while stalled jobs fill the queue);",
        "*unclear errors* would be anything else (a 500, a dropped connection with no API to reroute",
        "to); *rerouted* are requests the balancer re-sent because an API process was gone; *requeued*",
        "are jobs an API process published again because their lease lapsed, or was given up by a",
        "worker whose run ended without finishing them;",
        "*jobs in flight at the fault all finished after* is from the fault to the last of the jobs",
        "accepted before it finishing; *backlog cleared after healing* is from the heal to the last",
        "job accepted until then finishing; *finished tasks changed later* counts tasks whose final",
        "status differed when read again after the fault (a woken worker writing over them).",
        "",
        "Faults: " + "; ".join(f"**{r.name}**: {r.what}" for r in results) + ".",
        "",
    ]
    publish(
        "chaos", {"machine": facts, "results": [dataclasses.asdict(r) for r in results]}, "\n".join(lines)
    )
    return {"results": [dataclasses.asdict(r) for r in results]}
