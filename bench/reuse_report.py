"""``bench.reuse``'s results as markdown (``bench/results/reuse.md`` and the README's table)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .common import table
from .reuse_latency import LATENCY_TRIALS

# A run during which other processes took more than this share of the machine is flagged.
OTHER_CPU_SHARE = 0.05


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
