"""Lexicons: what a 10,000-entry pronunciation lexicon costs first audio, side by side in one run.

Two lexicons of 10,000 entries each are generated into a lexicon directory:

- ``brands-en`` (English): made-up brand and product names, most respelled (``<alias>``), one in
  five given eSpeak phonemes; plus a few real words of the test sentence, respelled to what the
  engine says anyway (``colour`` -> ``color``) or given eSpeak's own phonemes for them, so the
  lexicon does its work on every request without changing what is heard (a change would change
  the synthesis time, which is not what is measured);
- ``streets-zh`` (Mandarin): made-up two-to-four character names, every position of a Chinese
  sentence a candidate (no word breaks), the matcher's worst case, plus 便宜 read as pián yi.

Then, in one ttsd server (embedded, one slot per engine, no sentence pieces kept), streamed first
audio (``pcm`` over ``/v1/audio/speech``) for Piper ``en-joe`` and eSpeak ``zh-female``, in paired
rounds: the same new text (it carries the round's number) with the lexicon and without, in a random
order, so every request is synthesized and each pair differs only by the lexicon. Piper's speech
varies from run to run (its durations are sampled), so the verdict is on the median of the paired
differences, with a bootstrap interval. Beside it, in this process, the costs the lexicon adds to a
request before any engine runs: reading and compiling the directory (once, at start), and, for a
short reply and a 5,000-character text, preparing a request (normalising and keying: all a cache hit
does) and preparing a miss (the same, then splitting and rewriting its sentences).

Target (issue 16): first audio with the 10,000-entry lexicon within 5 ms of first audio without.
Writes ``bench/results/lexicons.md`` and ``lexicons.json`` and the README's block.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx

from .common import commit, machine, publish, ttsd_server
from .lexicons_report import render

ENTRIES = 10_000
TRIALS = 150
NS = 'xmlns="http://www.w3.org/2005/01/pronunciation-lexicon"'
# What each request says: its first sentence carries the trial's number (always new), with three
# words of the lexicon; the same for the Mandarin voice.
EN_TEXT = "Your colour parcel {n} left our centre at noon. It should arrive before six tonight."
EN_SAME = {"colour": "color", "centre": "center"}  # respelled to what Piper says anyway
EN_PHONEMES = ["parcel", "noon"]  # given the phonemes eSpeak itself reads for them
ZH_TEXT = "您的包裹{n}号很便宜，已经从中心发出。预计今晚六点前送达。"
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ze",
    "ru",
    "vo",
    "ni",
    "sa",
    "te",
    "bu",
    "gri",
    "flo",
    "pax",
    "quin",
    "dor",
    "vel",
    "tra",
    "zen",
    "mor",
    "lix",
]
HANZI = "东西南北中山水木林森海河湖江城花园路街桥门口金银星月光明华新"


def _brand(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()


def write_lexicons(directory: Path) -> dict[str, int]:
    """The two 10,000-entry lexicons; returns their sizes in bytes."""
    from ttsd.engines.espeak import runtime

    rng = random.Random(16)
    speak = runtime()
    en: dict[str, str] = {}
    for word, same in EN_SAME.items():
        en[word] = f"<alias>{same}</alias>"
    for word in EN_PHONEMES:
        en[word] = f"<phoneme>{speak.phonemes(word, 'en-us', ipa=False)}</phoneme>"
    while len(en) < ENTRIES:
        brand = _brand(rng)
        if brand not in en:
            phonemes = len(en) % 5 == 0
            en[brand] = (
                f"<phoneme>{speak.phonemes(brand.lower(), 'en-us', ipa=False)}</phoneme>"
                if phonemes
                else f"<alias>{' '.join(brand.lower())}</alias>"
            )
    zh: dict[str, str] = {"便宜": "<phoneme>phiE35nji5</phoneme>"}
    while len(zh) < ENTRIES:
        name = "".join(rng.choice(HANZI) for _ in range(rng.randint(2, 4)))
        zh.setdefault(name, f"<alias>{name[::-1]}</alias>")
    sizes = {}
    for name, language, entries in (("brands-en", "en-US", en), ("streets-zh", "zh-CN", zh)):
        body = "\n".join(f"  <lexeme><grapheme>{g}</grapheme>{p}</lexeme>" for g, p in entries.items())
        path = directory / f"{name}.pls"
        path.write_text(
            f'<?xml version="1.0" encoding="UTF-8"?>\n<lexicon version="1.0" {NS} alphabet="x-espeak" '
            f'xml:lang="{language}">\n{body}\n</lexicon>\n',
            encoding="utf-8",
        )
        sizes[name] = path.stat().st_size
    return sizes


def in_process(directory: Path) -> dict[str, Any]:
    """Start-up cost and per-request cost of the lexicons, in this process."""
    from ttsd.config import Settings
    from ttsd.links import Links
    from ttsd.prepare import SynthesisRequest, prepare_job
    from ttsd.voices import Catalogue

    settings = Settings(engines=("piper", "espeak"), lexicon_dir=directory)
    links = Links(b"a secret for the benchmark")
    started = time.perf_counter()
    catalogue = Catalogue.of(settings)
    load_seconds = time.perf_counter() - started
    tracemalloc.start()
    kept = Catalogue.of(settings)  # what a server holds for them, alive while measured
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    long_en = " ".join(EN_TEXT.format(n=i) for i in range(70))[:5000]
    long_zh = "".join(ZH_TEXT.format(n=i) for i in range(200))[:5000]
    cases = {
        "en reply": ("en-joe", EN_TEXT, "brands-en"),
        "en 5,000 characters": ("en-joe", long_en, "brands-en"),
        "zh reply": ("zh-female", ZH_TEXT, "streets-zh"),
        "zh 5,000 characters": ("zh-female", long_zh, "streets-zh"),
    }
    prepare: dict[str, dict[str, float]] = {}
    for label, (voice, text, lexicon) in cases.items():
        timings: dict[str, list[float]] = {}
        for i in range(200):
            for key, names in (("without", ()), ("with", (lexicon,))):
                request = SynthesisRequest(text.format(n=i), voice, lexicons=names)
                started = time.perf_counter()
                job = prepare_job(request, catalogue, links, max_text_chars=5000)
                prepared = time.perf_counter()
                job.sentences  # noqa: B018 (what a miss computes on its way to an engine)
                done = time.perf_counter()
                timings.setdefault(f"hit {key}", []).append(prepared - started)
                timings.setdefault(f"miss {key}", []).append(done - started)
        prepare[label] = {k: statistics.median(v[20:]) * 1e6 for k, v in timings.items()}
    return {"load_seconds": load_seconds, "memory_bytes": memory, "prepare_us": prepare}


def first_audio(url: str, trials: int) -> dict[str, dict[str, list[float]]]:
    """Paired streamed requests: each round, for each voice, the same new text with the lexicon
    and without, in a random order. The server keeps no sentence pieces, so neither request is
    served from the other's; the lexicon's key differs, so neither is a hit."""
    rng = random.Random(7)
    runs = {
        "piper en-joe": ("en-joe", EN_TEXT, "brands-en"),
        "espeak zh-female": ("zh-female", ZH_TEXT, "streets-zh"),
    }
    out: dict[str, dict[str, list[float]]] = {
        name: {key: [] for key in ("without", "with", "audio without", "audio with")} for name in runs
    }
    with httpx.Client(timeout=120) as client:
        deadline = time.monotonic() + 120
        while client.get(f"{url}/readyz").json().get("unavailable") and time.monotonic() < deadline:
            time.sleep(0.2)  # ready means one pool; this measures both
        for i in range(trials + 3):
            order = [(name, key) for name in runs for key in ("without", "with")]
            rng.shuffle(order)
            for name, key in order:
                voice, text, lexicon = runs[name]
                body = {
                    "input": text.format(n=i),
                    "voice": voice,
                    "response_format": "pcm",
                    "lexicons": [lexicon] if key == "with" else [],
                }
                started = time.perf_counter()
                ttfa = None
                size = 0
                with client.stream("POST", f"{url}/v1/audio/speech", json=body) as response:
                    response.raise_for_status()
                    rate = int(response.headers["x-sample-rate"])
                    for chunk in response.iter_raw():
                        if ttfa is None:
                            ttfa = time.perf_counter() - started
                        size += len(chunk)
                if i >= 3:  # warm-up excluded
                    out[name][key].append(ttfa or 0.0)
                    out[name][f"audio {key}"].append(size / 2 / rate)
    return out


def _summary(runs: dict[str, list[float]]) -> dict[str, Any]:
    """Medians and P90s of both arms, and the median of the paired differences with a bootstrap
    95 % interval (Piper's speech varies from run to run, so one pair says little)."""
    pairs = [w - o for w, o in zip(runs["with"], runs["without"], strict=True)]
    rng = random.Random(1)
    boots = sorted(statistics.median(rng.choices(pairs, k=len(pairs))) for _ in range(2000))
    return {
        **{
            key: {
                "median_ms": statistics.median(runs[key]) * 1e3,
                "p90_ms": statistics.quantiles(runs[key], n=10)[-1] * 1e3,
                "audio_seconds": statistics.fmean(runs[f"audio {key}"]),
            }
            for key in ("without", "with")
        },
        "paired_median_ms": statistics.median(pairs) * 1e3,
        "paired_ci_ms": (boots[50] * 1e3, boots[1949] * 1e3),
    }


def run(trials: int = TRIALS) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "lexicons"
        directory.mkdir()
        sizes = write_lexicons(directory)
        local = in_process(directory)
        env = {
            "TTSD_LEXICON_DIR": str(directory),
            "TTSD_POOLS": "piper:1,espeak:1",
            "TTSD_SENTENCE_REUSE": "false",
        }
        server_started = time.perf_counter()
        with ttsd_server(Path(tmp) / "data", **env) as url:
            ready_seconds = time.perf_counter() - server_started
            served = first_audio(url, trials)
    summary = {name: _summary(runs) for name, runs in served.items()}
    result = {
        "scenario": "lexicons",
        "commit": commit(),
        "machine": machine(),
        "entries": ENTRIES,
        "trials": trials,
        "lexicon_bytes": sizes,
        "in_process": local,
        "server_ready_seconds": ready_seconds,
        "first_audio": summary,
        "raw": served,
        "meets_target": all(abs(r["paired_median_ms"]) <= 5.0 for r in summary.values()),
        "seconds": time.monotonic() - started,
    }
    publish("lexicons", result, render(result))
    return result


if __name__ == "__main__":
    run()
