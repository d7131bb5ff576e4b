"""``python -m bench lexicons``'s report: first audio with a lexicon and without, and the API's
cost of preparing a text."""

from __future__ import annotations

from typing import Any

from .common import table


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    rows = [
        (
            "streamed first audio, ms",
            "without: median / P90",
            "10,000 entries: median / P90",
            "paired difference: median (95 % CI)",
            "audio spoken, s (without / with)",
        )
    ]
    for name, r in result["first_audio"].items():
        low, high = r["paired_ci_ms"]
        rows.append(
            (
                name,
                f"{r['without']['median_ms']:.1f} / {r['without']['p90_ms']:.1f}",
                f"{r['with']['median_ms']:.1f} / {r['with']['p90_ms']:.1f}",
                f"{r['paired_median_ms']:+.1f} ({low:+.1f} to {high:+.1f})",
                f"{r['without']['audio_seconds']:.2f} / {r['with']['audio_seconds']:.2f}",
            )
        )
    local = result["in_process"]
    prepare = [
        (
            "in the API, µs (median)",
            "hit: prepare, no lexicon",
            "with 10,000 entries",
            "miss: + rewrite, no lexicon",
            "with 10,000 entries",
        )
    ]
    for label, v in local["prepare_us"].items():
        prepare.append(
            (
                label,
                f"{v['hit without']:.0f}",
                f"{v['hit with']:.0f}",
                f"{v['miss without']:.0f}",
                f"{v['miss with']:.0f}",
            )
        )
    verdict = "met" if result["meets_target"] else "**missed**"
    sizes = ", ".join(f"{name} {size / 1e6:.2f} MB" for name, size in result["lexicon_bytes"].items())
    return (
        f"## Pronunciation lexicons\n\n"
        f"commit {result['commit']}, {m['cpu']} x {m['cores']} cores, {result['seconds'] / 60:.1f} minutes. "
        f"Two generated lexicons of {result['entries']:,} entries each ({sizes}); one ttsd server "
        f"(`piper:1,espeak:1`, no sentence pieces kept); {result['trials']} rounds after 3 of warm-up, "
        f"each streaming (`pcm`) the same new text per voice with the lexicon and without, in a random "
        f"order. The lexicon matches three words of the English text (two respelled to what Piper says "
        f"anyway, one given eSpeak's own phonemes) and one of the Mandarin text.\n\n"
        f"{table(rows)}\n\n{table(prepare)}\n\n"
        f"- Reading and compiling both lexicons at start: {local['load_seconds'] * 1e3:.0f} ms, "
        f"{local['memory_bytes'] / 1e6:.1f} MB of Python memory; the server was ready "
        f"{result['server_ready_seconds']:.1f} s after launch.\n"
        f"- Target: first audio with the lexicon within 5 ms of first audio without (median of the "
        f"paired differences): {verdict}.\n"
    )
