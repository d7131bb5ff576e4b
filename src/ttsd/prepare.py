"""A request, validated and normalised into a job: its spec, its cache key and its task id."""

from __future__ import annotations

from typing import NamedTuple

from . import audio
from .errors import InvalidRequest
from .jobs.model import Job
from .keys import SynthesisSpec
from .links import Links
from .text import normalize
from .voices import Catalogue

MIN_SPEED, MAX_SPEED = 0.5, 2.0


# A NamedTuple: a frozen dataclass costs several times more to build, and every request builds one.
class SynthesisRequest(NamedTuple):
    text: str
    voice: str | None = None
    language: str | None = None
    format: str = "wav"
    speed: float = 1.0
    seed: int | None = None
    lexicons: tuple[str, ...] = ()
    # Whose cache the request belongs to: "" (shared), or a tenant's name (TTSD_CACHE_SCOPE).
    scope: str = ""
    # The rate pcm or wav is wanted at (None: the engine's own); ulaw and alaw are always 8 kHz.
    sample_rate: int | None = None


def prepare_job(request: SynthesisRequest, catalogue: Catalogue, links: Links, *, max_text_chars: int) -> Job:
    """Validate and normalise; the job's key and task id follow from the result."""
    fmt = audio.format_at(request.format, request.sample_rate)
    if not MIN_SPEED <= request.speed <= MAX_SPEED:
        raise InvalidRequest(f"speed must be between {MIN_SPEED} and {MAX_SPEED}")
    voice = catalogue.resolve(request.voice, request.language)
    text = normalize(request.text, max_chars=max_text_chars)
    engine = catalogue.specs[voice.engine]
    lexicons = catalogue.lexicons.applied(request.lexicons, voice.language, engine.name)
    spec = SynthesisSpec(
        engine=engine.name,
        engine_version=engine.version,
        voice=voice.name,
        speaker=voice.speaker,
        language=voice.language,
        text=text,
        speed=round(float(request.speed), 3),
        seed=request.seed,
        lexicons=lexicons.key,
        scope=request.scope,
    )
    rewrite = lexicons.speak if lexicons.table is not None else None
    return Job(task_id=links.task_id(spec.key, fmt.name), spec=spec, fmt=fmt.name, rewrite=rewrite)
