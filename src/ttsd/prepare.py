"""A request, validated and normalised into a job: its spec, its cache key and its task id."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from . import audio
from .engines.base import EngineSpec, Voice, phoneme_span
from .errors import InvalidRequest, InvalidSsml, TextTooLong
from .jobs.model import Job, Layout
from .keys import SynthesisSpec
from .links import Links
from .ssml import compile_ssml, is_ssml
from .text import normalize, script_language
from .textnorm import Normalizer, normalizer
from .voices import Catalogue

MIN_SPEED, MAX_SPEED = 0.5, 2.0
_TAGS = re.compile(r"<[^>]*>")


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
    # "text" or "ssml" (as Polly's TextType); None: SSML when the text is a <speak> document.
    text_type: str | None = None


def prepare_job(
    request: SynthesisRequest,
    catalogue: Catalogue,
    links: Links,
    *,
    max_text_chars: int,
    normalize_text: bool = True,
) -> Job:
    """Validate and normalise; the job's key and task id follow from the result.
    ``normalize_text``: numbers and the like written as they are said (``textnorm``)."""
    fmt = audio.format_at(request.format, request.sample_rate)
    if not MIN_SPEED <= request.speed <= MAX_SPEED:
        raise InvalidRequest(f"speed must be between {MIN_SPEED} and {MAX_SPEED}")
    if request.text_type not in (None, "text", "ssml"):
        raise InvalidRequest("text_type is text or ssml")
    if request.text_type == "ssml" or (request.text_type is None and is_ssml(request.text)):
        return prepare_ssml(request, fmt, catalogue, links, max_text_chars, normalize_text)
    text = normalize(request.text, max_chars=max_text_chars)
    voice = _voice(request, text, catalogue)
    engine = catalogue.specs[voice.engine]
    lexicons = catalogue.lexicons.applied(request.lexicons, voice.language, engine.name)
    norm = normalizer(voice.language) if normalize_text else None
    if norm is not None and not norm.applies(text):
        norm = None
    spec = _spec(request, voice, engine, text, lexicons.key, norm)
    rewrite = _rewrite(norm, lexicons.speak if lexicons.table is not None else None)
    return Job(task_id=links.task_id(spec.key, fmt.name), spec=spec, fmt=fmt.name, rewrite=rewrite)


def _voice(request: SynthesisRequest, text: str, catalogue: Catalogue) -> Voice:
    language = request.language
    if request.voice is None and language is None:
        # Neither named: the script says (a Mandarin text is not read by the English default).
        seen = script_language(text)
        language = seen if seen is not None and seen in catalogue.languages else None
    return catalogue.resolve(request.voice, language)


def prepare_ssml(
    request: SynthesisRequest,
    fmt: audio.AudioFormat,
    catalogue: Catalogue,
    links: Links,
    max_text_chars: int,
    normalize_text: bool,
) -> Job:
    """An SSML document: its sentences as the engine will say them (say-as and sub written out,
    normalised, the lexicons applied), each one's rate, the breaks and marks between them. The key
    covers the sentences, rates and breaks (what changes the samples), not the marks."""
    if "\x00" in request.text:
        raise InvalidSsml("the document contains NUL bytes")
    voice = _voice(request, _TAGS.sub(" ", request.text), catalogue)
    engine = catalogue.specs[voice.engine]
    plan = compile_ssml(
        request.text, language=voice.language, alphabets=engine.alphabets, speak_phonemes=phoneme_span
    )
    spoken = sum(len(s) for s in plan.sentences)
    if spoken > max_text_chars:
        raise TextTooLong(
            f"the document says {spoken} characters; the limit is {max_text_chars}",
            details={"length": spoken, "limit": max_text_chars},
        )
    names = tuple(dict.fromkeys((*request.lexicons, *plan.lexicons)))
    lexicons = catalogue.lexicons.applied(names, voice.language, engine.name)
    norm = normalizer(voice.language) if normalize_text else None
    sentences = (
        tuple(norm.sentence(s) if norm.applies(s) else s for s in plan.sentences) if norm else plan.sentences
    )
    if lexicons.table is not None:
        sentences = lexicons.speak(sentences)
    canonical = json.dumps(
        {
            "sentences": [[s, r, p] for s, r, p in zip(sentences, plan.rates, plan.pauses, strict=True)],
            "tail": plan.tail,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    spec = _spec(request, voice, engine, f"<ssml>{canonical}", lexicons.key, norm)
    layout = Layout(plan.rates, plan.pauses, plan.tail, plan.marks, plan.ignored)
    return Job(
        task_id=links.task_id(spec.key, fmt.name), spec=spec, fmt=fmt.name, spoken=sentences, layout=layout
    )


def _spec(
    request: SynthesisRequest,
    voice: Voice,
    engine: EngineSpec,
    text: str,
    lexicons: str,
    norm: Normalizer | None,
) -> SynthesisSpec:
    return SynthesisSpec(
        engine=engine.name,
        engine_version=engine.version,
        voice=voice.name,
        speaker=voice.speaker,
        language=voice.language,
        text=text,
        speed=round(float(request.speed), 3),
        seed=request.seed,
        lexicons=lexicons,
        scope=request.scope,
        norm=norm.version if norm is not None else "",
    )


def _rewrite(
    norm: Normalizer | None, lexicons: Callable[[Sequence[str]], tuple[str, ...]] | None
) -> Callable[[Sequence[str]], tuple[str, ...]] | None:
    """What becomes of a text's sentences on their way to the engine: normalised, then the
    lexicons applied (run lazily: on the way to an engine, never for a hit)."""
    if norm is None:
        return lexicons
    speak = norm.sentence

    def rewrite(sentences: Sequence[str]) -> tuple[str, ...]:
        said = tuple(speak(s) for s in sentences)
        return lexicons(said) if lexicons is not None else said

    return rewrite
