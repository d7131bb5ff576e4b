"""Engine registry: names to specs. Specs are cheap; models load only in engine worker processes."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ConfigError
from . import espeak, hibari, kokoro, piper
from .base import Engine, EngineSpec, Pcm, Voice

REGISTRY: dict[str, EngineSpec] = {
    spec.name: spec for spec in (piper.SPEC, hibari.SPEC, espeak.SPEC, kokoro.SPEC)
}


def select(names: Iterable[str]) -> dict[str, EngineSpec]:
    """The specs for the configured engine names, in order; unknown names are a configuration error."""
    chosen: dict[str, EngineSpec] = {}
    for name in names:
        if name not in REGISTRY:
            raise ConfigError(f"unknown engine {name!r}; known: {', '.join(REGISTRY)}")
        chosen[name] = REGISTRY[name]
    if not chosen:
        raise ConfigError("no engines configured (TTSD_ENGINES is empty)")
    return chosen


__all__ = ["REGISTRY", "Engine", "EngineSpec", "Pcm", "Voice", "select"]
