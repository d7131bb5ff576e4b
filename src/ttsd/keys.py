"""Cache keys.

The key names what is synthesized, not how it is packaged: the format is left out, so a text is
synthesized once into a master and every format is encoded from it. Task ids add the format, so
identical requests arriving together share one task; they and every other name handed out are
keyed by a server secret (``links``), since anyone can compute a key from a guessed text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from .engines.base import Voice


@dataclass(frozen=True)
class SynthesisSpec:
    """A normalised request without its format: everything that changes the samples."""

    engine: str
    engine_version: str
    voice: str
    speaker: str
    language: str
    text: str
    speed: float
    seed: int | None
    # The content hashes of the pronunciation lexicons applied, in order ("" for none).
    lexicons: str = ""
    # The tenant whose cache this is, under TTSD_CACHE_SCOPE=tenant ("" for the shared cache):
    # sentence pieces keep it, so one tenant's sentences are never another's either.
    scope: str = ""
    # The text normaliser's version, for texts it can change ("" otherwise, and when it is off).
    norm: str = ""

    @property
    def voice_ref(self) -> Voice:
        """The voice as an engine takes it."""
        return Voice(self.voice, self.engine, self.speaker, self.language, "", "")

    @property
    def key(self) -> str:
        fields = asdict(self)
        # Keys made before lexicons, scopes and normalisation existed stay valid.
        for name in ("lexicons", "scope", "norm"):
            if not fields[name]:
                del fields[name]
        canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def file_id(key: str, fmt: str) -> str:
    """One encoded file's name within the cache, recorded on a finished task (``audio_id``: the
    field's name predates capability links). Never handed out: see ``links.Links.audio_id``."""
    return f"{key}.{fmt}"
