"""``ttsd say``: one text to a file, synthesized in this process without a server or the cache."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import audio
from .base import EXIT_OK, settings_from


def say_command(args: argparse.Namespace) -> int:
    from ..jobs.slot import synthesize_master
    from ..links import Links
    from ..prepare import SynthesisRequest, prepare_job
    from ..voices import Catalogue

    settings = settings_from(args, "engines")
    out = Path(args.output)
    fmt_name = args.format or out.suffix.lstrip(".").lower() or "wav"
    if fmt_name == "raw":
        fmt_name = "pcm"
    catalogue = Catalogue.of(settings)
    request = SynthesisRequest(
        text=args.text,
        voice=args.voice,
        language=args.language,
        format=fmt_name,
        speed=args.speed,
        seed=args.seed,
        lexicons=args.lexicons,
        sample_rate=args.sample_rate,
        text_type=args.text_type,
    )
    job = prepare_job(
        request,
        catalogue,
        Links.of(settings),
        max_text_chars=settings.max_text_chars,
        normalize_text=settings.text_normalization,
    )
    engine = catalogue.specs[job.spec.engine].load(threads=settings.engine_threads)
    started = time.perf_counter()
    pcm = synthesize_master(engine, job.spec, sentences=job.sentences, layout=job.layout)
    data = audio.encode(pcm, engine.sample_rate, audio.get_format(job.fmt))
    out.write_bytes(data)
    seconds = len(pcm) / engine.sample_rate
    print(
        f"{out}: {seconds:.2f} s of {job.spec.voice} audio ({job.fmt}, {len(data)} bytes) "
        f"in {time.perf_counter() - started:.2f} s",
        file=sys.stderr,
    )
    return EXIT_OK
