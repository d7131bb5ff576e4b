"""Build the storage and state backends a mode calls for (embedded: local files and SQLite)."""

from __future__ import annotations

from .config import Settings
from .engines import Engine, Voice, select
from .state.base import CacheIndex
from .state.sqlite import SqliteCacheIndex
from .store.base import AudioStore
from .store.local import LocalStore

WARM_TEXT = "Ready."


def build_store(settings: Settings) -> AudioStore:
    return LocalStore(settings.audio_dir)


def build_index(settings: Settings) -> CacheIndex:
    return SqliteCacheIndex(settings.index_path)


def load_engines(settings: Settings) -> dict[str, Engine]:
    """Load every configured engine and run one synthesis on each, so the first real request does
    not pay for lazy initialisation (G2P tables, onnxruntime arenas)."""
    engines: dict[str, Engine] = {}
    for name, spec in select(settings.engines).items():
        engine = spec.load(threads=settings.engine_threads)
        voice: Voice = spec.voices[0]
        engine.synthesize(WARM_TEXT, voice, speed=1.0, seed=0)
        engines[name] = engine
    return engines
