"""Time to first audio for streamed long text, next to the bare engine.

Side by side, in one run: the bare Piper engine (one thread, as one ttsd slot) synthesizing the
first sentence alone and the whole text, and ttsd streaming the same text over HTTP (a cache miss
each time), measured at the client to the first byte of audio and to the last.
Each trial's first sentence carries the trial's number: with sentence reuse a first sentence seen
before would be a cached piece and streamed at once, and this measures first audio of a new text.
(The middle sentences are the same in every trial, so from the second trial on they are cached
pieces under sentence reuse: the last byte is that of a text whose first and last sentences are new.)
Target: first audio within 1.3 x the first sentence's synthesis time + 30 ms.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from .common import RESULTS, commit, machine, table, ttsd_server

PARAGRAPH = (
    "Your order left our warehouse this morning. "
    "The driver should reach your address before six in the evening. If nobody is at home, "
    "the parcel goes to a neighbour or the nearest pickup point. You can follow it on our website. "
    "Is there anything else I can help you with today?"
)


def trial_text(i: int) -> str:
    """Trial ``i``'s text: a first sentence of its own, the shared paragraph, a last sentence of its own."""
    return f"Thank you for calling the support line, caller {i}. {PARAGRAPH} Reference {i}."


def bare_engine(trials: int) -> dict[str, list[float]]:
    from ttsd.engines import REGISTRY
    from ttsd.jobs.slot import synthesize_master
    from ttsd.keys import SynthesisSpec
    from ttsd.text import split_sentences

    spec = REGISTRY["piper"]
    engine = spec.load(threads=1)
    voice = spec.voices[0]
    engine.synthesize("Warm up.", voice, speed=1.0, seed=None)
    text = trial_text(trials + 2)  # shaped like the streamed trials' texts (numbers 0 .. trials + 1)
    first_sentence = split_sentences(text)[0]
    job = SynthesisSpec("piper", spec.version, voice.name, voice.speaker, voice.language, text, 1.0, None)
    first, whole = [], []
    for _ in range(trials):
        started = time.perf_counter()
        engine.synthesize(first_sentence, voice, speed=1.0, seed=None)
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        synthesize_master(engine, job)
        whole.append(time.perf_counter() - started)
    return {"first_sentence": first, "whole_text": whole}


def streamed(url: str, trials: int) -> dict[str, list[float]]:
    first, whole = [], []
    with httpx.Client(timeout=120) as client:
        for i in range(trials + 2):
            # A new first and last sentence each time: a cache miss whose first sentence is not a
            # cached piece either, of about the same length every time.
            body = {"input": trial_text(i), "voice": "en-joe", "response_format": "pcm"}
            started = time.perf_counter()
            ttfa = None
            with client.stream("POST", f"{url}/v1/audio/speech", json=body) as response:
                for _ in response.iter_raw():
                    if ttfa is None:
                        ttfa = time.perf_counter() - started
            if i >= 2:  # warm-up excluded
                first.append(ttfa or 0.0)
                whole.append(time.perf_counter() - started)
    return {"first_audio": first, "whole_stream": whole}


def run(trials: int = 15) -> dict[str, Any]:
    engine = bare_engine(trials)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        with ttsd_server(data, TTSD_ENGINE_SLOTS="2", TTSD_ENGINES="piper") as url:
            ours = streamed(url, trials)
    med = {k: statistics.median(v) for k, v in {**engine, **ours}.items()}
    target = 1.3 * med["first_sentence"] + 0.030
    result = {
        "scenario": "first_audio",
        "commit": commit(),
        "machine": machine(),
        "trials": trials,
        "median_seconds": med,
        "target_seconds": target,
        "meets_target": med["first_audio"] <= target,
        "raw": {**engine, **ours},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "first_audio.json").write_text(json.dumps(result, indent=2))
    ms = {k: f"{v * 1000:.0f} ms" for k, v in med.items()}
    rows = [
        ("measure", "median"),
        ("bare Piper: first sentence alone", ms["first_sentence"]),
        ("bare Piper: whole text (7 sentences)", ms["whole_text"]),
        ("ttsd stream: first audio at the client", ms["first_audio"]),
        ("ttsd stream: last byte at the client (5 middle sentences cached)", ms["whole_stream"]),
        ("target: 1.3 x first sentence + 30 ms", f"{target * 1000:.0f} ms"),
    ]
    text = (
        f"## Time to first audio\n\ncommit {result['commit']}, {trials} trials each (after warm-up), "
        f"{result['machine']['cpu']} x {result['machine']['cores']}\n\n{table(rows)}\n\n"
        f"Target {'met' if result['meets_target'] else 'NOT met'}.\n"
    )
    (RESULTS / "first_audio.md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    run()
