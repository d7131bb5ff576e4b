"""The one job body: synthesize -> encode -> store -> index.

A plain synchronous function. The embedded pool's engine processes and (in distributed mode) the
Celery task both call it; only the store, index and reporter they pass differ.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext

from .. import audio
from ..engines import Engine, Voice
from ..errors import AudioNotFound
from ..keys import SynthesisSpec
from ..state.base import CacheEntry, CacheIndex, Stage
from ..store.base import MASTER, AudioStore, object_name
from ..text import split_sentences
from .model import Job, JobOutcome, Reporter


def synthesize_master(
    engine: Engine,
    spec: SynthesisSpec,
    *,
    on_piece: Callable[[audio.Pcm16, int, int], None] | None = None,
) -> audio.Pcm16:
    """Speak the whole text piece by piece; ``on_piece(pcm, index, count)`` sees each piece."""
    voice = Voice(spec.voice, spec.engine, spec.speaker, spec.language, "", "")
    pieces = split_sentences(spec.text)
    out: list[audio.Pcm16] = []
    for i, piece in enumerate(pieces):
        raw = engine.synthesize(piece, voice, speed=spec.speed, seed=spec.seed)
        if raw.size == 0:
            continue
        pcm = audio.assemble_piece(raw, engine.sample_rate, first=not out, speed=spec.speed)
        out.append(pcm)
        if on_piece is not None:
            on_piece(pcm, i, len(pieces))
    return audio.finish(out, engine.sample_rate)


def _keep(
    store: AudioStore, index: CacheIndex, key: str, fmt: str, data: bytes, content_type: str, rate: int,
    duration: float, ttl: float,
) -> CacheEntry:  # fmt: skip
    """Store one file, then index it: a reader never finds an entry whose object is not whole."""
    name = object_name(key, fmt)
    store.put(name, data, content_type)
    now = time.time()
    entry = CacheEntry(
        key=key,
        fmt=fmt,
        object_name=name,
        size=len(data),
        etag=hashlib.sha256(data).hexdigest()[:32],
        content_type=content_type,
        sample_rate=rate,
        duration=duration,
        created_at=now,
        expires_at=now + ttl,
    )
    index.put(entry)
    return entry


def _cached_master(job: Job, store: AudioStore, index: CacheIndex) -> tuple[audio.Pcm16, int] | None:
    entry = index.get(job.key, MASTER)
    if entry is None:
        return None
    try:
        return audio.decode(store.get(entry.object_name))
    except AudioNotFound:
        index.delete(job.key, MASTER)  # the object went away under the index: synthesize again
        return None


def _master(
    job: Job,
    engines: Mapping[str, Engine],
    store: AudioStore,
    index: CacheIndex,
    reporter: Reporter,
    cache_ttl: float,
) -> tuple[audio.Pcm16, int, bool, float]:
    """The text's master: from the cache, or synthesized and stored. Returns (pcm, rate,
    synthesized, synthesis seconds)."""
    cached = _cached_master(job, store, index)
    if cached is not None:
        return cached[0], cached[1], False, 0.0
    engine = engines[job.spec.engine]
    reporter.stage(Stage.SYNTHESIZING, 0)

    def on_piece(pcm: audio.Pcm16, i: int, count: int) -> None:
        reporter.audio(pcm, engine.sample_rate)
        reporter.stage(Stage.SYNTHESIZING, int(80 * (i + 1) / count))

    started = time.perf_counter()
    pcm = synthesize_master(engine, job.spec, on_piece=on_piece)
    seconds = time.perf_counter() - started
    reporter.audio_end()
    rate = engine.sample_rate
    data = audio.encode(pcm, rate, audio.MASTER)
    _keep(store, index, job.key, MASTER, data, audio.MASTER.media_type, rate, len(pcm) / rate, cache_ttl)
    return pcm, rate, True, seconds


def run_job(
    job: Job,
    engines: Mapping[str, Engine],
    store: AudioStore,
    index: CacheIndex,
    reporter: Reporter,
    *,
    cache_ttl: float,
    cache_max_bytes: int,
    master_lock: Callable[[str], AbstractContextManager[object]] = lambda key: nullcontext(),
) -> JobOutcome:
    """``master_lock(key)`` is held while looking for and making the master, so jobs for other
    formats of the same text, on other workers, wait and reuse it instead of synthesizing again."""
    fmt = audio.get_format(job.fmt)
    with master_lock(job.key):
        pcm, rate, synthesized, synthesis_seconds = _master(job, engines, store, index, reporter, cache_ttl)
    reporter.stage(Stage.ENCODING, 85)
    data = audio.encode(pcm, rate, fmt)
    reporter.stage(Stage.STORING, 95)
    rate_out = audio.encoded_rate(fmt, rate)
    entry = _keep(store, index, job.key, fmt.name, data, fmt.media_type, rate_out, len(pcm) / rate, cache_ttl)
    evicted = tuple(index.evict(cache_max_bytes))
    for dropped in evicted:
        store.delete(dropped)
    return JobOutcome(
        entry=entry,
        synthesized=synthesized,
        audio_seconds=len(pcm) / rate,
        synthesis_seconds=synthesis_seconds,
        evicted=evicted,
    )
