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

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from . import support_corpus
from .common import RESULTS, commit, machine, publish, table, ttsd_process, ttsd_server
from .overload import percentile
from .suite import metric

REQUESTS = 600
USERS = 16
SLOTS = 2
EFFICIENCY_TEXTS = 80
EFFICIENCY_SENTENCES = 8
EFFICIENCY_REPEATS = 2
LATENCY_TRIALS = 20
# A run during which other processes took more than this share of the machine is flagged.
OTHER_CPU_SHARE = 0.05
ESPEAK_VOICE = "en-us-female"
BIG = {"TTSD_QUEUE_LIMIT": "100000", "TTSD_MAX_WAIT": "100000"}
PIPER_ENV = {"TTSD_ENGINES": "piper", "TTSD_DEFAULT_VOICE": "en-joe", "TTSD_ENGINE_SLOTS": str(SLOTS), **BIG}

# -- 1. engine seconds, reuse on and off ------------------------------------------------------


async def _closed_loop(url: str, texts: list[str], users: int) -> tuple[list[tuple[int, float, str]], float]:
    """Every text once, in order, by ``users`` clients each sending the next as soon as the last
    answered; (status, latency, X-Cache) per request, and the wall time."""
    calls: list[tuple[int, float, str]] = []
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    pending = iter(texts)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def user() -> None:
            for text in pending:
                body = {"input": text, "voice": "en-joe", "response_format": "wav"}
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/audio/speech", json=body)
                    latency = time.perf_counter() - started
                    calls.append((response.status_code, latency, response.headers.get("x-cache", "")))
                except httpx.HTTPError:
                    calls.append((0, time.perf_counter() - started, ""))

        began = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(users)))
        return calls, time.perf_counter() - began


def _closed_loop_worker(queue: Any, url: str, texts: list[str], users: int) -> None:
    queue.put(asyncio.run(_closed_loop(url, texts, users)))


def closed_loop(url: str, texts: list[str], users: int) -> tuple[list[tuple[int, float, str]], float]:
    """The closed loop in its own process, so the client's event loop is not the bench's."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_closed_loop_worker, args=(queue, url, texts, users))
    process.start()
    result: tuple[list[tuple[int, float, str]], float] = queue.get(timeout=1800)
    process.join(timeout=30)
    return result


_COUNTERS = {
    "engine_seconds": ("ttsd_synthesis_seconds_total", {}),
    "slot_busy_seconds": ("ttsd_slot_busy_seconds_total", {}),
    "syntheses": ("ttsd_syntheses_total", {}),
    "engine_audio_seconds": ("ttsd_audio_seconds_total", {}),
    "text_hit": ("ttsd_cache_requests_total", {"result": "hit"}),
    "text_miss": ("ttsd_cache_requests_total", {"result": "miss"}),
    "text_merged": ("ttsd_cache_requests_total", {"result": "merged"}),
    "sentence_hit": ("ttsd_sentence_requests_total", {"result": "hit"}),
    "sentence_miss": ("ttsd_sentence_requests_total", {"result": "miss"}),
    "sentence_merged": ("ttsd_sentence_requests_total", {"result": "merged"}),
    "job_failures": ("ttsd_job_failures_total", {}),
}


def counters(url: str) -> dict[str, float]:
    return {name: metric(url, m, **labels) for name, (m, labels) in _COUNTERS.items()}


class CpuMeter:
    """CPU seconds (user + system) of ttsd's engine processes, of its API process, of everything
    this benchmark started, and of the whole machine: what the other processes on the machine took
    during a run shows whether its figures were disturbed."""

    def __init__(self, server_pid: int) -> None:
        self._server = psutil.Process(server_pid)

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        try:
            t = process.cpu_times()
        except psutil.Error:
            return 0.0
        return float(t.user + t.system)

    def read(self) -> dict[str, float]:
        engines = 0.0
        for child in self._server.children():
            try:
                if any("spawn_main" in part for part in child.cmdline()):
                    engines += self._cpu(child)
            except psutil.Error:
                pass
        return {"engine_cpu_seconds": engines, "api_cpu_seconds": self._cpu(self._server),
                "outside_cpu_seconds": outside_cpu()}  # fmt: skip

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        d = {k: after[k] - before[k] for k in after}
        d["other_cpu_seconds"] = max(0.0, d.pop("outside_cpu_seconds"))
        return d


def outside_cpu() -> float:
    """CPU seconds the machine has spent so far outside this benchmark's own processes (counted
    from their start; compare two readings)."""
    me = psutil.Process()
    own = me.cpu_times()
    bench = own.user + own.system + own.children_user + own.children_system
    for child in me.children(recursive=True):
        try:
            t = child.cpu_times()
            bench += t.user + t.system
        except psutil.Error:
            pass
    machine_times = psutil.cpu_times()
    busy = sum(machine_times) - machine_times.idle - getattr(machine_times, "iowait", 0.0)
    return float(busy - bench)


def engine_run(tmp: Path, texts: list[str], *, reuse: bool) -> dict[str, Any]:
    name = "on" if reuse else "off"
    env = {"TTSD_SENTENCE_REUSE": str(reuse).lower(), **PIPER_ENV}
    with ttsd_process(tmp / f"engine-{name}", **env) as (url, process):
        meter = CpuMeter(process.pid)
        before, cpu_before = counters(url), meter.read()
        calls, elapsed = closed_loop(url, texts, USERS)
        time.sleep(0.5)  # the last jobs' figures are recorded after their answers
        after, cpu = counters(url), CpuMeter.delta(cpu_before, meter.read())
    d = {k: after[k] - before[k] for k in after}
    ok = [latency for status, latency, _ in calls if status == 200]
    statuses: dict[str, int] = {}
    for status, _, _ in calls:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    text_requests = d["text_hit"] + d["text_miss"] + d["text_merged"]
    sentence_requests = d["sentence_hit"] + d["sentence_miss"] + d["sentence_merged"]
    return {
        "reuse": reuse,
        "requests": len(calls),
        "ok": len(ok),
        "errors": len(calls) - len(ok),
        "statuses": statuses,
        "x_cache": {v: sum(1 for _, _, c in calls if c == v) for v in sorted({c for _, _, c in calls})},
        "seconds": elapsed,
        "throughput": len(ok) / elapsed,
        "p50_ms": percentile(ok, 0.5) * 1000,
        "p99_ms": percentile(ok, 0.99) * 1000,
        "text_hit_ratio": d["text_hit"] / max(text_requests, 1),
        "sentence_hit_ratio": d["sentence_hit"] / max(sentence_requests, 1),
        "busy_over_synthesis": d["slot_busy_seconds"] / max(d["engine_seconds"], 1e-9),
        **d,
        **cpu,
    }


# -- bare engines, in their own process ------------------------------------------------------


def _bare_worker(queue: Any, engine_name: str, voice_name: str, sentences: list[str]) -> None:
    from ttsd.engines import REGISTRY

    spec = REGISTRY[engine_name]
    engine = spec.load(threads=1)
    voice = next(v for v in spec.voices if v.name == voice_name)
    for warm in ("Warm up.", "Warming the engine up with a longer sentence of a few words."):
        engine.synthesize(warm, voice, speed=1.0, seed=None)
    times = []
    for sentence in sentences:
        started = time.perf_counter()
        engine.synthesize(sentence, voice, speed=1.0, seed=None)
        times.append(time.perf_counter() - started)
    queue.put(times)


def bare_engine(engine: str, voice: str, sentences: list[str]) -> list[float]:
    """Seconds the bare engine (one thread, as in one slot) takes for each sentence, in a loop."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_bare_worker, args=(queue, engine, voice, sentences))
    process.start()
    times: list[float] = queue.get(timeout=600)
    process.join(timeout=30)
    return times


def bare_engine_checked(engine: str, voice: str, sentences: list[str]) -> tuple[list[float], float]:
    """``bare_engine``, and the CPU seconds other processes on the machine took meanwhile."""
    before = outside_cpu()
    times = bare_engine(engine, voice, sentences)
    return times, max(0.0, outside_cpu() - before)


# -- 2. slot efficiency on unique texts -------------------------------------------------------

_FRAMES = (
    "Notice {n}: the parcel for this account left the depot this morning.",
    "Item {n} will be carried by the regional courier until the evening.",
    "Please keep reference {n} ready if you call us again about it.",
    "The driver on route {n} may ring your bell before six o'clock.",
    "If nobody answers, parcel {n} goes to the nearest pickup point.",
    "You can follow shipment {n} on our website at any time of day.",
    "Our records show that invoice {n} was paid in full last week.",
    "Thank you for waiting, and goodbye from desk number {n}.",
)


def unique_texts(count: int, start: int) -> list[str]:
    """``count`` texts of eight sentences, each sentence unique (it carries its own number)."""
    return [
        " ".join(
            frame.format(n=start + t * EFFICIENCY_SENTENCES + i)
            for i, frame in enumerate(_FRAMES[:EFFICIENCY_SENTENCES])
        )
        for t in range(count)
    ]


async def _submit_all(url: str, texts: list[str]) -> tuple[float, list[str], list[int]]:
    limits = httpx.Limits(max_connections=len(texts), max_keepalive_connections=len(texts))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        started = time.time()
        responses = await asyncio.gather(
            *(
                client.post("/v1/synthesize", json={"text": t, "voice": ESPEAK_VOICE, "format": "wav"})
                for t in texts
            )
        )
    return started, [r.json().get("task_id", "") for r in responses], [r.status_code for r in responses]


def efficiency_run(tmp: Path, texts: list[str], tag: str) -> dict[str, Any]:
    from ttsd.text import normalize, split_sentences

    sentences = [s for t in texts for s in split_sentences(normalize(t, max_chars=5000))]
    assert len(sentences) == len(texts) * EFFICIENCY_SENTENCES == len(set(sentences))
    bare_times, bare_other = bare_engine_checked("espeak", ESPEAK_VOICE, sentences)
    bare = sum(bare_times)
    env = {"TTSD_ENGINES": "espeak", "TTSD_DEFAULT_VOICE": ESPEAK_VOICE, "TTSD_ENGINE_SLOTS": "1", **BIG}
    with ttsd_process(tmp / f"efficiency-{tag}", **env) as (url, process):
        meter = CpuMeter(process.pid)
        before, cpu_before = counters(url), meter.read()
        started, task_ids, statuses = asyncio.run(_submit_all(url, texts))
        # Poll the oldest unfinished task only (one slot works through them in order), lightly.
        done_at: dict[str, float] = {}
        failed = 0
        observed_end = started
        with httpx.Client(base_url=url, timeout=30) as client:
            for task_id, status in zip(task_ids, statuses, strict=True):
                if status != 202:
                    continue
                while True:
                    body = client.get(f"/v1/tasks/{task_id}").json()
                    if body["status"] in ("done", "failed"):
                        failed += body["status"] == "failed"
                        done_at[task_id] = float(body["updated_at"])
                        observed_end = time.time()
                        break
                    time.sleep(0.02)
        time.sleep(0.3)
        after, cpu = counters(url), CpuMeter.delta(cpu_before, meter.read())
    d = {k: after[k] - before[k] for k in after}
    # The server's own clock when the last job ended (same machine, same clock as ``started``).
    ttsd_seconds = max(done_at.values(), default=observed_end) - started
    return {
        "texts": len(texts),
        "sentences": len(sentences),
        "submit_statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "failed": failed,
        "bare_seconds": bare,
        "bare_other_cpu_seconds": bare_other,
        "ttsd_seconds": ttsd_seconds,
        "ttsd_seconds_observed_by_polling": observed_end - started,
        "efficiency": bare / ttsd_seconds,
        "engine_seconds": d["engine_seconds"],
        "slot_busy_seconds": d["slot_busy_seconds"],
        "busy_over_synthesis": d["slot_busy_seconds"] / max(d["engine_seconds"], 1e-9),
        "engine_over_bare": d["engine_seconds"] / bare,
        "sentence_miss": d["sentence_miss"],
        **cpu,
    }


# -- 3. near-hit and first-audio latency ------------------------------------------------------

_WARM = (
    ("Thanks for calling.", "I have found your account.", "Is there anything else I can help you with?"),
    ("Thank you for contacting customer support.", "We received your documents.", "Have a great day."),
    ("Thank you for your patience.", "You are next in line.", "An agent will be with you shortly."),
    ("We are sorry for the inconvenience.", "Please stay on the line.",
     "We have also sent the details to your email address."),
)  # fmt: skip


def _first_audio(client: httpx.Client, text: str) -> tuple[float, float, int]:
    """Seconds to the first non-empty chunk and to the last, and the status, of a streamed text."""
    body = {"input": text, "voice": "en-joe", "response_format": "pcm"}
    started = time.perf_counter()
    first = 0.0
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        for chunk in response.iter_raw():
            if chunk and not first:
                first = time.perf_counter() - started
        status = response.status_code
    return first, time.perf_counter() - started, status


def latency_run(tmp: Path) -> dict[str, Any]:
    cached = [s for text in _WARM for s in text]
    warm_texts = {" ".join(t) for t in _WARM}
    combos = [
        " ".join(c)
        for c in itertools.islice(itertools.permutations(cached, 3), 0, None, 23)
        if " ".join(c) not in warm_texts
    ]
    near: dict[str, list[float]] = {"wav": [], "mp3": []}
    near_bad: list[str] = []
    ttfa_cached: list[float] = []
    ttfa_new: list[float] = []
    stream_bad: list[int] = []
    new_first = [f"Thanks for calling about reference {70_000 + i}." for i in range(LATENCY_TRIALS + 2)]
    outside_before = outside_cpu()
    with ttsd_server(tmp / "latency", **PIPER_ENV) as url, httpx.Client(base_url=url, timeout=120) as client:
        for warm in _WARM:
            body = {"input": " ".join(warm), "voice": "en-joe", "response_format": "wav"}
            client.post("/v1/audio/speech", json=body).raise_for_status()
        trial = 0
        for fmt in ("wav", "mp3"):
            for i in range(LATENCY_TRIALS + 2):
                request = {"text": combos[trial], "voice": "en-joe", "format": fmt}
                trial += 1
                started = time.perf_counter()
                response = client.post("/v1/synthesize", json=request)
                took = time.perf_counter() - started
                answer = response.json()
                if response.status_code != 200 or answer.get("sentences_reused") != answer.get("sentences"):
                    near_bad.append(f"{response.status_code} {answer}")
                if i >= 2:  # warm-up excluded
                    near[fmt].append(took)
        for i in range(LATENCY_TRIALS + 2):
            # First sentence cached, a new one after it, then cached ones.
            first, _, status = _first_audio(
                client,
                f"{cached[0]} Your reference number is {50_000 + i}. {cached[1]} {cached[2]}",
            )
            if status != 200:
                stream_bad.append(status)
            if i >= 2:
                ttfa_cached.append(first)
        for i in range(LATENCY_TRIALS + 2):
            # Everything after the first sentence cached, the first one new.
            first, _, status = _first_audio(client, f"{new_first[i]} {cached[1]} {cached[2]}")
            if status != 200:
                stream_bad.append(status)
            if i >= 2:
                ttfa_new.append(first)
    other = max(0.0, outside_cpu() - outside_before)
    bare, bare_other = bare_engine_checked("piper", "en-joe", new_first[2:])
    return {
        "near_hit_seconds": near,
        "near_hit_anomalies": near_bad,
        "first_audio_cached_first_sentence": ttfa_cached,
        "first_audio_new_first_sentence": ttfa_new,
        "bare_first_sentence": bare,
        "bare_other_cpu_seconds": bare_other,
        "stream_errors": stream_bad,
        "other_cpu_seconds": other,
    }


# -- the run -----------------------------------------------------------------------------------


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


def render(r: dict[str, Any]) -> str:
    m, c, s = r["machine"], r["corpus"], r["summary"]
    on, off = r["engine"]["on"], r["engine"]["off"]
    runs: list[tuple[str, ...]] = [("support-bot replies", "reuse on", "reuse off")]
    cells: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
        ("engine seconds", lambda v: f"{v['engine_seconds']:.1f}"),
        ("slot busy seconds", lambda v: f"{v['slot_busy_seconds']:.1f}"),
        ("slot busy / engine", lambda v: f"{v['busy_over_synthesis']:.3f}"),
        ("sentences spoken by an engine", lambda v: f"{v['sentence_miss']:.0f}"),
        ("text hit ratio", lambda v: f"{v['text_hit_ratio']:.2f}"),
        ("sentence hit ratio", lambda v: f"{v['sentence_hit_ratio']:.2f}"),
        ("sentences merged in flight", lambda v: f"{v['sentence_merged']:.0f}"),
        ("P50 / P99", lambda v: f"{v['p50_ms']:.0f} / {v['p99_ms']:.0f} ms"),
        ("requests/s", lambda v: f"{v['throughput']:.1f}"),
        ("wall time", lambda v: f"{v['seconds']:.0f} s"),
        ("errors", lambda v: str(v["errors"])),
        ("engine processes' CPU seconds", lambda v: f"{v['engine_cpu_seconds']:.1f}"),
        ("API process CPU seconds", lambda v: f"{v['api_cpu_seconds']:.1f}"),
        ("other processes on the machine, CPU s", lambda v: f"{v['other_cpu_seconds']:.1f}"),
    )
    for label, cell in cells:
        runs.append((label, cell(on), cell(off)))
    eff: list[tuple[str, ...]] = [
        (
            "unique texts, 1 eSpeak NG slot",
            "bare engine",
            "ttsd",
            "efficiency",
            "slot busy / engine",
            "ttsd engine / bare",
            "other processes' CPU",
        )
    ]
    for i, e in enumerate(r["efficiency"], 1):
        eff.append((f"run {i}: {e['texts']} texts, {e['sentences']} sentences", f"{e['bare_seconds']:.2f} s",
                    f"{e['ttsd_seconds']:.2f} s", f"{e['efficiency']:.2f}",
                    f"{e['busy_over_synthesis']:.3f}", f"{e['engine_over_bare']:.2f}",
                    f"{e['bare_other_cpu_seconds']:.1f} s / {e['other_cpu_seconds']:.1f} s"))  # fmt: skip
    lat = r["latency"]
    near_wav, near_mp3 = s["near_hit_wav_ms"], s["near_hit_mp3_ms"]
    latency_rows: list[tuple[str, ...]] = [
        ("latency (Piper en-joe, idle server)", "median", "max"),
        ("near-hit `POST /v1/synthesize` -> 200, wav", f"{near_wav['median']:.1f} ms",
         f"{near_wav['max']:.1f} ms"),
        ("near-hit `POST /v1/synthesize` -> 200, mp3", f"{near_mp3['median']:.1f} ms",
         f"{near_mp3['max']:.1f} ms"),
        ("first audio, streamed pcm, first sentence cached", f"{s['first_audio_cached_first_ms']:.1f} ms",
         f"{max(lat['first_audio_cached_first_sentence']) * 1000:.1f} ms"),
        ("first audio, streamed pcm, first sentence new", f"{s['first_audio_new_first_ms']:.1f} ms",
         f"{max(lat['first_audio_new_first_sentence']) * 1000:.1f} ms"),
        ("bare Piper, the same new first sentences alone", f"{s['bare_first_sentence_ms']:.1f} ms",
         f"{max(lat['bare_first_sentence']) * 1000:.1f} ms"),
    ]  # fmt: skip

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    targets: list[tuple[str, ...]] = [
        ("target", "measured", ""),
        ("engine seconds, reuse on / off <= 0.4", f"{s['engine_seconds_ratio']:.2f}",
         verdict(s["engine_seconds_ratio"] <= 0.4)),
        ("(the same from the engine processes' CPU / audio made)",
         f"{s['engine_cpu_ratio']:.2f} / {s['engine_audio_ratio']:.2f}", ""),
        ("slot busy / engine seconds <= 1.1 (reuse on)", f"{s['busy_over_synthesis_reuse_on']:.3f}",
         verdict(s["busy_over_synthesis_reuse_on"] <= 1.1)),
        ("slot efficiency >= 0.85 (median of runs)", f"{s['efficiency_median']:.2f}",
         verdict(s["efficiency_median"] >= 0.85)),
        ("near-hit well under 50 ms (wav, max)", f"{near_wav['max']:.1f} ms", verdict(near_wav["max"] < 50)),
        ("first audio, first sentence cached <= 30 ms", f"{s['first_audio_cached_first_ms']:.1f} ms",
         verdict(s["first_audio_cached_first_ms"] <= 30)),
    ]  # fmt: skip
    anomalies = []
    if lat["near_hit_anomalies"]:
        count = len(lat["near_hit_anomalies"])
        anomalies.append(f"- near-hits not answered 200 from cached sentences: {count}")
    if lat["stream_errors"]:
        anomalies.append(f"- streams not answered 200: {lat['stream_errors']}")
    for name, v in (("reuse on", on), ("reuse off", off)):
        if v["errors"] or v["job_failures"]:
            anomalies.append(f"- {name}: statuses {v['statuses']}, job failures {v['job_failures']:.0f}")
    for i, e in enumerate(r["efficiency"], 1):
        if e["failed"] or set(e["submit_statuses"]) != {"202"}:
            anomalies.append(f"- efficiency run {i}: submits {e['submit_statuses']}, failed {e['failed']}")
    cores = int(m["cores"])
    disturbed = [(f"support-bot run, reuse {'on' if v['reuse'] else 'off'}", v["other_cpu_seconds"],
                  v["seconds"]) for v in (on, off)]  # fmt: skip
    for i, e in enumerate(r["efficiency"], 1):
        disturbed.append((f"efficiency run {i}, bare engine", e["bare_other_cpu_seconds"], e["bare_seconds"]))
        disturbed.append((f"efficiency run {i}, ttsd", e["other_cpu_seconds"], e["ttsd_seconds"]))
    for name, other, seconds in disturbed:
        if other > OTHER_CPU_SHARE * cores * seconds:
            anomalies.append(
                f"- {name}: other processes on the machine used {other:.1f} CPU s "
                f"({other / (cores * seconds):.0%} of its {cores} cores over the run): figures disturbed"
            )
    return (
        f"## Sentence reuse (`python -m bench reuse`)\n\n"
        f"commit {r['commit']}, {m['cpu']} x {m['cores']} cores, {r['wall_minutes']:.1f} minutes. "
        f"{c['requests']} support-bot replies ({c['templates']} templates by Zipf, 2 to 4 sentences, slots "
        f"filled from pools; {c['distinct_texts']} distinct texts, {c['text_repeat_share']:.0%} whole-text "
        f"repeats, {c['distinct_sentences']} distinct sentences in {c['sentences_of_distinct_texts']} "
        f"sentences of the distinct texts) sent once each as `POST /v1/audio/speech` (wav) by "
        f"{r['users']} closed-loop users to Piper `en-joe` on {r['slots']} slots, from an empty cache.\n\n"
        f"{table(runs)}\n\n"
        f"Unique 8-sentence texts, all submitted at once, first submit to last job done; the bare engine "
        f"speaks the same sentences in a loop in its own process (warm-up excluded):\n\n"
        f"{table(eff)}\n\n"
        f"{LATENCY_TRIALS} trials each after 2 of warm-up; near-hits are new 3-sentence combinations of "
        f"cached sentences:\n\n"
        f"{table(latency_rows)}\n\n"
        f"{table(targets)}\n" + ("\nAnomalies:\n\n" + "\n".join(anomalies) + "\n" if anomalies else "")
    )


if __name__ == "__main__":
    run()
