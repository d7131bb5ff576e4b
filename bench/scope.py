"""``python -m bench scope``: what ``TTSD_CACHE_SCOPE=tenant`` costs in hit ratio, on the soak's support
traffic (``soak_traffic``: Zipf over 30,000 replies of 1 to 4 sentences; over a day's 100,000
requests the catalogue's size, not the exponent, sets the share of repeats: about 71 %).

A day's requests (100,000) are shared out among 1, 4 or 16 tenants (by a Zipf law over tenants: a
few large ones and a tail, as on a hosted service), and replayed through the service's own keys
(``prepare_job``, with the tenant as its scope when per-tenant; ``piece_keys`` for the sentences)
into an LRU cache of texts and one of sentences, each unbounded or held to a budget of a third of
the distinct texts (the soak's budget is below its working set too). Counted: the requests answered
from the text cache, and of the others the sentences already cached (those need no engine).

This replays the cache's bookkeeping, not the audio: hit ratios depend on the order of requests,
the keys and the budget, not on how fast anything runs. Results go to ``bench/results/scope.{md,json}``.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

from ttsd.config import Settings
from ttsd.jobs.pieces import piece_keys
from ttsd.links import Links
from ttsd.prepare import SynthesisRequest, prepare_job
from ttsd.voices import Catalogue

from .common import commit, machine, publish, table
from .soak_traffic import catalogue, zipf_picks

REQUESTS = 100_000
CATALOGUE = 30_000
TENANTS = (1, 4, 16)


class _Lru:
    def __init__(self, capacity: int | None) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    def seen(self, key: str) -> bool:
        """Whether ``key`` is cached; it is afterwards (made on a miss), as the least recently used."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        self._keys[key] = None
        if self._capacity is not None and len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return False


def _replay(
    requests: list[tuple[int, SynthesisRequest]], cat: Catalogue, scoped: bool, budget: int | None
) -> dict[str, float]:
    links = Links(b"the scope benchmark's secret")
    texts, pieces = _Lru(budget), _Lru(None if budget is None else budget * 2)
    hits = sentences = reused = 0
    for tenant, request in requests:
        request = request._replace(scope=f"t{tenant}" if scoped else "")
        job = prepare_job(request, cat, links, max_text_chars=5000)
        if texts.seen(f"{job.key}:{job.fmt}"):
            hits += 1
            continue
        for key in piece_keys(job.spec, job.sentences):
            sentences += 1
            reused += pieces.seen(key)
    return {"text_hits": hits / len(requests), "sentences_reused": reused / max(sentences, 1)}


def run() -> dict[str, Any]:
    settings = Settings(engines=("piper", "espeak"))
    cat = Catalogue.of(settings)
    replies = catalogue(CATALOGUE)
    _, ranks = zipf_picks(len(replies), REQUESTS, 0.58, seed=2027)
    picks = [replies[int(rank)] for rank in ranks]
    budget = len({p.text for p in picks}) // 3
    rows: list[dict[str, Any]] = []
    for count in TENANTS:
        rng = random.Random(count)
        weights = [1 / (rank + 1) for rank in range(count)]
        owners = rng.choices(range(count), weights=weights, k=len(picks))
        requests = [
            (owner, SynthesisRequest(p.text, p.voice, format=p.format))
            for owner, p in zip(owners, picks, strict=True)
        ]
        for scope in ("shared", "tenant"):
            for limit in (None, budget):
                figures = _replay(requests, cat, scope == "tenant", limit)
                rows.append({"tenants": count, "scope": scope, "budget": limit, **figures})
    result = {
        "scenario": "scope",
        "commit": commit(),
        "machine": machine(),
        "requests": len(picks),
        "distinct_texts": len({p.text for p in picks}),
        "repeats": 1 - len(set(picks)) / len(picks),
        "budget_texts": budget,
        "rows": rows,
    }
    publish("scope", result, _report(result))
    return result


def _report(result: dict[str, Any]) -> str:
    lines = [
        "## Cache scope (`python -m bench scope`)",
        "",
        f"commit {result['commit']}; the soak's traffic model: {result['requests']:,} requests over "
        f"{result['distinct_texts']:,} distinct replies ({100 * result['repeats']:.0f} % repeats), shared "
        f"out among tenants by a Zipf law; the budget holds {result['budget_texts']:,} texts (a third "
        "of them) and twice as many sentences.",
        "",
    ]
    rows = [
        (
            str(r["tenants"]),
            r["scope"],
            "none" if r["budget"] is None else f"{r['budget']:,} texts",
            f"{100 * r['text_hits']:.1f} %",
            f"{100 * r['sentences_reused']:.1f} %",
        )
        for r in result["rows"]
    ]
    header = ("tenants", "scope", "budget", "text hits", "sentences of misses reused")
    lines.append(table([header, *rows]))
    lines.append("")
    return "\n".join(lines)
