"""Engine registry: names to specs. Specs are cheap; models load only in engine worker processes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import ConfigError
from . import chattts, espeak, hibari, kokoro, piper
from .base import Engine, EngineSpec, Pcm, Voice

if TYPE_CHECKING:
    from ..config import Settings

REGISTRY: dict[str, EngineSpec] = {
    spec.name: spec for spec in (piper.SPEC, hibari.SPEC, espeak.SPEC, kokoro.SPEC, chattts.SPEC)
}


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


__all__ = ["REGISTRY", "Engine", "EngineSpec", "Pcm", "Voice", "select"]
