"""Cache keys and task ids.

The key names what is synthesized, not how it is packaged: the format is left out, so a text is
synthesized once into a master and every format is encoded from it. The task id adds the format,
so identical requests arriving together share one task.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass

from .engines.base import Voice

KEY_RE = re.compile(r"^[0-9a-f]{64}$")
TASK_ID_RE = re.compile(r"^[0-9a-f]{32}$")


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

    @property
    def voice_ref(self) -> Voice:
        """The voice as an engine takes it."""
        return Voice(self.voice, self.engine, self.speaker, self.language, "", "")

    @property
    def key(self) -> str:
        fields = asdict(self)
        if not self.lexicons:
            del fields["lexicons"]  # keys made before lexicons existed stay valid
        canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def task_id(key: str, fmt: str) -> str:
    return hashlib.sha256(f"{key}:{fmt}".encode()).hexdigest()[:32]


def audio_id(key: str, fmt: str) -> str:
    """The public name of one encoded file, as in ``/v1/audio/{audio_id}``."""
    return f"{key}.{fmt}"


def parse_audio_id(value: str) -> tuple[str, str] | None:
    key, dot, fmt = value.partition(".")
    if not dot or not KEY_RE.match(key) or not fmt.isalnum():
        return None
    return key, fmt
