"""Sentence pieces and whole texts in the cache: their keys, how they are stored and indexed (the
object first, so a reader never finds an entry whose object is not whole), and how they are read
back checked (a missing or corrupt one is dropped and made again, never served)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np

from .. import audio
from ..errors import AudioNotFound
from ..keys import SynthesisSpec
from ..state.base import CacheEntry, CacheIndex
from ..store.base import MARKS, MASTER, PIECE, AudioStore
from .recall import PieceMemory

log = logging.getLogger("ttsd.jobs")

Marks = tuple[tuple[str, float], ...]  # an SSML document's marks: name, seconds into the audio


def piece_keys(
    spec: SynthesisSpec, sentences: Sequence[str], speeds: Sequence[float] | None = None
) -> list[str]:
    """Each sentence keyed like a text of its own (engine, version, voice, language, speed, seed),
    by what the engine says: ``sentences`` are normalised and have the lexicons applied, so a
    lexicon edit misses only the sentences whose words it changes, and "4521" read as digits
    shares its piece with the same digits written out. ``speeds``: each sentence's own (SSML)."""
    if speeds is None:
        return [dataclasses.replace(spec, text=s, lexicons="", norm="").key for s in sentences]
    return [
        dataclasses.replace(spec, text=s, speed=speed, lexicons="", norm="").key
        for s, speed in zip(sentences, speeds, strict=True)
    ]


def _entry(
    key: str, fmt: str, name: str, data: bytes, content_type: str, rate: int, duration: float, ttl: float,
    start: int = 0,
) -> CacheEntry:  # fmt: skip
    now = time.time()
    return CacheEntry(
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
        start=start,
    )


def keep(
    store: AudioStore, index: CacheIndex, key: str, fmt: str, data: bytes, content_type: str, rate: int,
    duration: float, ttl: float, inside: Sequence[CacheEntry] = (),
) -> CacheEntry:  # fmt: skip
    """Store one file, then index it: a reader never finds an entry whose object is not whole.
    ``inside``: entries for ranges of it (``_ranges``), indexed with it in one round trip, before
    it."""
    entry = _entry(key, fmt, "", data, content_type, rate, duration, ttl)
    entry = dataclasses.replace(entry, object_name=store.name(key, fmt, entry.etag[:16]))
    store.put(entry.object_name, data, content_type)
    index.put_many([*(dataclasses.replace(e, object_name=entry.object_name) for e in inside), entry])
    return entry


def keep_pieces(
    store: AudioStore, index: CacheIndex, made: Sequence[tuple[str, audio.Pcm16]], rate: int, ttl: float,
    memory: PieceMemory | None = None,
) -> None:  # fmt: skip
    """The sentences a batch made, as one object (one request to object storage, not one a
    sentence) and an entry each for its range of it, indexed in one round trip. The object is
    named by the first piece's key and the digest of all its bytes; it goes when its last entry
    does."""
    made = list(dict(made).items())  # a sentence said twice is one piece
    chunks = [pcm.astype("<i2").tobytes() for _, pcm in made]
    data = b"".join(chunks)
    entries, start = [], 0
    for (key, pcm), chunk in zip(made, chunks, strict=True):
        entries.append(_entry(key, PIECE, "", chunk, "audio/pcm", rate, len(pcm) / rate, ttl, start))
        start += len(chunk)
    name = store.name(made[0][0], PIECE, hashlib.sha256(data).hexdigest()[:16])
    store.put(name, data, "audio/pcm")
    entries = [dataclasses.replace(e, object_name=name) for e in entries]
    index.put_many(entries)
    if memory is not None:
        for entry, chunk in zip(entries, chunks, strict=True):
            memory.put(entry, chunk)


def _load(
    store: AudioStore, index: CacheIndex, entry: CacheEntry, rate: int, memory: PieceMemory | None
) -> audio.Pcm16 | None:
    """A piece's samples, or None. One whose object is missing, or whose bytes do not match what
    was indexed (size, digest, sample rate), is dropped so the sentence is synthesized again."""
    if memory is not None and (known := memory.get(entry)) is not None and entry.sample_rate == rate:
        return np.frombuffer(known, dtype="<i2").astype(np.int16)
    try:
        data = store.get(entry.object_name, entry.span)
    except AudioNotFound:
        data = None
    if (
        data is None
        or len(data) != entry.size
        or entry.sample_rate != rate
        or hashlib.sha256(data).hexdigest()[:32] != entry.etag
    ):
        log.warning("cached piece missing or corrupt; synthesizing it again", extra={"key": entry.key})
        for name in index.delete(entry.key, PIECE):
            store.delete(name)
        return None
    if memory is not None:
        memory.put(entry, data)
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def load_piece(
    store: AudioStore, index: CacheIndex, key: str, rate: int, memory: PieceMemory | None = None
) -> audio.Pcm16 | None:
    """A cached piece, or None (``_load``)."""
    entry = index.get(key, PIECE)
    return None if entry is None else _load(store, index, entry, rate, memory)


def load_pieces(
    store: AudioStore, index: CacheIndex, keys: list[str], rate: int, memory: PieceMemory | None = None
) -> list[audio.Pcm16 | None]:
    """Each key's cached piece or None, looked up in one round trip."""
    entries = index.get_many(keys, PIECE)
    return [None if entry is None else _load(store, index, entry, rate, memory) for entry in entries]


def cached_master(key: str, store: AudioStore, index: CacheIndex) -> tuple[audio.Pcm16, int] | None:
    """A text's lossless master, decoded, when the cache holds one."""
    entry = index.get(key, MASTER)
    if entry is None:
        return None
    try:
        return audio.decode(store.get(entry.object_name))
    except AudioNotFound:
        index.delete(key, MASTER)  # the object went away under the index: make it again
        return None


def load_marks(store: AudioStore, index: CacheIndex, key: str) -> Marks | None:
    """The marks kept with a text's audio (``keep_text``), or None."""
    entry = index.get(key, MARKS)
    if entry is None:
        return None
    try:
        data = store.get(entry.object_name)
    except AudioNotFound:
        index.delete(key, MARKS)
        return None
    return tuple((str(name), float(seconds)) for name, seconds in json.loads(data))


def _ranges(
    data: bytes, fmt: audio.AudioFormat, rate: int, pieces: Mapping[str, tuple[int, audio.Pcm16]], ttl: float
) -> tuple[list[tuple[CacheEntry, bytes]], list[tuple[str, audio.Pcm16]]]:
    """The pieces ``data`` holds unchanged, as entries for their ranges of it (object name to
    come), and the rest."""
    base = audio.samples_at(data, fmt, rate) if pieces else None
    inside, apart = [], []
    for key, (at, pcm) in pieces.items():
        chunk = pcm.astype("<i2").tobytes()
        start = -1 if base is None else base + 2 * at
        if chunk and start >= 0 and data[start : start + len(chunk)] == chunk:
            piece = _entry(key, PIECE, "", chunk, "audio/pcm", rate, len(pcm) / rate, ttl, start)
            inside.append((piece, chunk))
        else:
            apart.append((key, pcm))
    return inside, apart


def keep_text(
    store: AudioStore, index: CacheIndex, key: str, fmt: audio.AudioFormat, rate: int, duration: float,
    master: bytes | None, data: bytes, ttl: float, max_bytes: int, marks: Marks = (),
    pieces: Mapping[str, tuple[int, audio.Pcm16]] | None = None, memory: PieceMemory | None = None,
) -> tuple[CacheEntry, tuple[str, ...]]:  # fmt: skip
    """A text's master (when made here), its SSML marks and format stored and indexed (the format
    last: whoever finds it finds the rest); then the byte budget kept. Returns the format's entry
    and the objects evicted.

    ``pieces``: its sentences made and not stored yet, each with where its samples begin in the
    master. A wav or pcm file holds them unchanged, so they are entries for ranges of it: a miss
    stores one object, not its pieces and its file (half the bytes). Other formats do not: they
    are stored as one object of their own first (``keep_pieces``). Either way the object goes when
    its last entry does."""
    if master is not None:
        keep(store, index, key, MASTER, master, audio.MASTER.media_type, rate, duration, ttl)
    if marks:
        keep(store, index, key, MARKS, json.dumps(marks).encode(), "application/json", rate, duration, ttl)
    inside, apart = _ranges(data, fmt, rate, pieces or {}, ttl)
    if apart:
        keep_pieces(store, index, apart, rate, ttl, memory)
    rate_out = audio.encoded_rate(fmt, rate)
    entries = [e for e, _ in inside]
    entry = keep(store, index, key, fmt.name, data, fmt.media_type, rate_out, duration, ttl, entries)
    if memory is not None:
        for piece, chunk in inside:
            memory.put(dataclasses.replace(piece, object_name=entry.object_name), chunk)
    evicted = tuple(index.evict(max_bytes))
    for dropped in evicted:
        store.delete(dropped)
    return entry, evicted
