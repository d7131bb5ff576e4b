"""Text normalisation, per language, on the way to an engine (never for a cache hit): numbers,
money, dates, times, phone and order numbers written as a support line says them, whatever each
engine's own front end would have made of them. Part of a text's key (its version), but only of
texts it can change, so other texts keep the keys they always had; a sentence's key is the key of
what the engine is given, so the same words share one cached sentence however they were written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from . import en, zh


class Normalizer(NamedTuple):
    version: str
    applies: Callable[[str], bool]  # whether it can change the text
    sentence: Callable[[str], str]  # one sentence, normalised


_BY_LANGUAGE = {
    "cmn": Normalizer(zh.VERSION, zh.applies, zh.normalize),
    "en-US": Normalizer(en.VERSION, en.applies, en.normalize),
}


def normalizer(language: str) -> Normalizer | None:
    return _BY_LANGUAGE.get(language)
