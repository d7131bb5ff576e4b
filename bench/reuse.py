"""``python -m bench reuse``: what sentence-level reuse saves, and what it costs, in one run.

1. Engine time on the support-bot replies (``bench/support_corpus.py``: templates that share their
   greetings and closings, one slot-bearing sentence each): the same sample sent by a closed loop
   of users to ttsd (Piper ``en-joe``, 2 slots) from an empty cache, once with
   ``TTSD_SENTENCE_REUSE=true`` and once with ``false``. Engine seconds, slot seconds, hit ratios
   at the text and at the sentence level, latency and throughput, from ttsd's own metrics.
2. Slot efficiency: unique 8-sentence texts (no sentence repeats) through one eSpeak NG slot, all
   submitted at once, against the bare engine speaking exactly the same sentences in a loop, in its
   own process on the same cores (warm-up excluded). Twice.
3. Latency: a near-hit (every sentence cached, the whole text new) answered 200 by
   ``POST /v1/synthesize``, and the first byte of a streamed text whose first sentence is cached
   (and, for comparison, one whose first sentence is new, next to the bare engine speaking it).

Results go to ``bench/results/reuse.{md,json}`` and the README's table.
"""

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from . import support_corpus
from .common import RESULTS, commit, machine, publish
from .reuse_latency import latency_run
from .reuse_measure import SLOTS
from .reuse_report import render
from .reuse_runs import USERS, efficiency_run, engine_run, unique_texts

REQUESTS = 600
EFFICIENCY_TEXTS = 80
EFFICIENCY_REPEATS = 2


def run() -> dict[str, Any]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    wall = time.monotonic()
    support_corpus.check()
    texts = support_corpus.draw(REQUESTS)
    distinct, distinct_sentences_total, distinct_sentences = support_corpus.unique_texts_sentences(texts)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        engine = {"on": engine_run(tmp, texts, reuse=True), "off": engine_run(tmp, texts, reuse=False)}
        efficiency = [
            efficiency_run(tmp, unique_texts(EFFICIENCY_TEXTS, 1000 + r * 10_000), str(r))
            for r in range(EFFICIENCY_REPEATS)
        ]
        latency = latency_run(tmp)
    on, off = engine["on"], engine["off"]

    def med_ms(values: list[float]) -> float:
        return statistics.median(values) * 1000 if values else float("nan")

    summary = {
        "engine_seconds_ratio": on["engine_seconds"] / max(off["engine_seconds"], 1e-9),
        # The same saving seen two other ways: CPU the engine processes used (unaffected by
        # preemption), and audio the engines made.
        "engine_cpu_ratio": on["engine_cpu_seconds"] / max(off["engine_cpu_seconds"], 1e-9),
        "engine_audio_ratio": on["engine_audio_seconds"] / max(off["engine_audio_seconds"], 1e-9),
        "busy_over_synthesis_reuse_on": on["busy_over_synthesis"],
        "efficiency_median": statistics.median(e["efficiency"] for e in efficiency),
        "near_hit_wav_ms": {"median": med_ms(latency["near_hit_seconds"]["wav"]),
                            "max": max(latency["near_hit_seconds"]["wav"]) * 1000},
        "near_hit_mp3_ms": {"median": med_ms(latency["near_hit_seconds"]["mp3"]),
                            "max": max(latency["near_hit_seconds"]["mp3"]) * 1000},
        "first_audio_cached_first_ms": med_ms(latency["first_audio_cached_first_sentence"]),
        "first_audio_new_first_ms": med_ms(latency["first_audio_new_first_sentence"]),
        "bare_first_sentence_ms": med_ms(latency["bare_first_sentence"]),
    }  # fmt: skip
    result = {
        "scenario": "reuse",
        "commit": commit(),
        "machine": machine(),
        "corpus": {
            "requests": len(texts),
            "templates": len(support_corpus.TEMPLATES),
            "distinct_texts": distinct,
            "sentences_of_distinct_texts": distinct_sentences_total,
            "distinct_sentences": distinct_sentences,
            "text_repeat_share": support_corpus.repeat_share(texts),
            "sentence_repeat_share": support_corpus.sentence_repeat_share(texts),
        },
        "users": USERS,
        "slots": SLOTS,
        "summary": summary,
        "engine": engine,
        "efficiency": efficiency,
        "latency": latency,
        "wall_minutes": (time.monotonic() - wall) / 60,
    }
    publish("reuse", result, render(result))
    return result


if __name__ == "__main__":
    run()
