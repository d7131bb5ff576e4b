"""Pronunciation lexicons: the PLS files of ``TTSD_LEXICON_DIR``, compiled once at start.

A request names lexicons (``"lexicons": ["acme"]``); ``TTSD_DEFAULT_LEXICONS`` add theirs after
them. Only those of the request's language apply, the request's first: for a grapheme in several,
the first lexicon that has it wins (as Polly does). Each sentence is rewritten just before synthesis
by the table of the lexicons applied (``lexicon_table.Table``: the longest grapheme at each place,
whole words where the script has spaces).

Compiled means one table per (lexicon, engine): every grapheme mapped to what that engine is
given, the lexeme's first pronunciation the engine can say (an alias, spoken as text, or phonemes
in one of the engine's ``alphabets``, passed as a span).

Cache keys: a text's key carries the content hashes of the lexicons applied to it, so editing a
lexicon never serves stale audio and an unchanged one never costs a miss. A sentence's key is the
key of what its engine is given once the lexicons are applied, so an edit makes the engine speak
again only the sentences whose words it changes; the rest of a text is assembled from the cache.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .engines import REGISTRY, EngineSpec
from .engines.base import phoneme_span
from .errors import ConfigError, InvalidRequest, UnknownLanguage, UnknownLexicon, UnsupportedLexicon
from .lexicon_table import Table
from .pls import Lexicon, LexiconError, read

log = logging.getLogger("ttsd.lexicons")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SUFFIXES = (".pls", ".xml")
MAX_PER_REQUEST = 16
_APPLIED_MAX = 1024


class Applied(NamedTuple):
    """The lexicons one request applies: ``key`` (their hashes, for the cache key) and the merged
    table its engine uses."""

    key: str
    table: Table | None

    def speak(self, sentences: Sequence[str]) -> tuple[str, ...]:
        """Each sentence as the engine is to say it."""
        if self.table is None:
            return tuple(sentences)
        return tuple(self.table.speak(s) for s in sentences)


NOTHING = Applied("", None)


@dataclass
class _Compiled:
    lexicon: Lexicon
    language: str  # the catalogue's tag for xml:lang (as written when no voice speaks it)
    digest: str
    tables: dict[str, Table] = field(default_factory=dict)  # by engine
    unsayable: dict[str, str] = field(default_factory=dict)  # engine -> why it cannot say it
    graphemes: int = 0


class Lexicons:
    """The lexicons requests may name, compiled for the configured engines."""

    @classmethod
    def load(
        cls,
        directory: Path | None,
        defaults: Sequence[str],
        specs: Mapping[str, EngineSpec],
        language: Callable[[str], str],
    ) -> Lexicons:
        """Read and compile every lexicon; a file that does not parse, an unknown default or a
        default that an engine of its language cannot say is refused here, at start."""
        if directory is None:
            if defaults:
                raise ConfigError("TTSD_DEFAULT_LEXICONS is set but TTSD_LEXICON_DIR is not")
            return cls({}, (), specs)
        if not directory.is_dir():
            raise ConfigError(f"TTSD_LEXICON_DIR={directory} is not a directory")
        compiled: dict[str, _Compiled] = {}
        for path in sorted(p for p in directory.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()):
            name = path.stem
            if not NAME.match(name):
                raise LexiconError(
                    f"lexicon {path}: its name {name!r} (the file's stem) must be letters, digits, '-' "
                    "and '_', at most 64"
                )
            if name in compiled:
                raise LexiconError(f"lexicon {path}: {compiled[name].lexicon.path.name} has the same name")
            compiled[name] = _compile(read(path, name), specs, language)
        lexicons = cls(compiled, tuple(dict.fromkeys(defaults)), specs)
        lexicons._check_defaults()
        return lexicons

    def __init__(
        self, compiled: dict[str, _Compiled], defaults: tuple[str, ...], specs: Mapping[str, EngineSpec]
    ) -> None:
        self._compiled = compiled
        self.defaults = defaults
        self._languages = {v.language for spec in specs.values() for v in spec.voices}
        self._applied: dict[tuple[tuple[str, ...], str, str], Applied] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self._compiled)

    def _check_defaults(self) -> None:
        for name in self.defaults:
            chosen = self._compiled.get(name)
            if chosen is None:
                raise ConfigError(
                    f"TTSD_DEFAULT_LEXICONS names {name!r}, which TTSD_LEXICON_DIR does not hold "
                    f"(it holds: {', '.join(self.names) or 'none'})"
                )
            if chosen.unsayable:
                why = next(iter(chosen.unsayable.values()))
                raise ConfigError(
                    f"TTSD_DEFAULT_LEXICONS: lexicon {name!r} applies to every {chosen.language} "
                    f"request, but {why}"
                )
            if chosen.language not in self._languages:
                log.warning(
                    "default lexicon %r is in %s, which no configured voice speaks", name, chosen.language
                )

    def applied(self, names: Sequence[str], language: str, engine: str) -> Applied:
        """The lexicons a request applies: those it names, then the defaults, of its language.
        Raises UnknownLexicon for a name not loaded, UnsupportedLexicon for one whose phonemes the
        engine cannot say."""
        wanted = tuple(names)
        memo = (wanted, language, engine)
        found = self._applied.get(memo)
        if found is not None:
            return found
        if len(wanted) > MAX_PER_REQUEST:
            raise InvalidRequest(f"at most {MAX_PER_REQUEST} lexicons a request, not {len(wanted)}")
        unknown = [n for n in wanted if n not in self._compiled]
        if unknown:
            known = ", ".join(self.names) or "none (TTSD_LEXICON_DIR)"
            raise UnknownLexicon(
                f"unknown lexicon {unknown[0]!r}; known: {known}", details={"valid": self.names}
            )
        chosen = [
            self._compiled[n]
            for n in dict.fromkeys(wanted + self.defaults)
            if self._compiled[n].language == language
        ]
        for compiled in chosen:
            why = compiled.unsayable.get(engine)
            if why is not None:
                raise UnsupportedLexicon(f"lexicon {compiled.lexicon.name!r} cannot be used here: {why}")
        result = NOTHING
        if chosen:
            key = ",".join(c.digest for c in chosen)
            if len(chosen) == 1:
                table = chosen[0].tables[engine]
            else:
                merged: dict[str, str] = {}
                for compiled in reversed(chosen):  # the first lexicon's graphemes win
                    merged.update(compiled.tables[engine].replacements)
                table = Table.of(merged)
            result = Applied(key, table)
        if len(self._applied) >= _APPLIED_MAX:
            self._applied.clear()
        self._applied[memo] = result
        return result

    def listing(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "language": c.language,
                "entries": len(c.lexicon.lexemes),
                "graphemes": c.graphemes,
                "hash": c.digest,
                "alphabets": sorted(
                    {p.alphabet for lx in c.lexicon.lexemes for p in lx.pronunciations if p.alphabet}
                ),
                "default": name in self.defaults,
                "engines": sorted(c.tables),
                "unsupported": dict(sorted(c.unsayable.items())),
            }
            for name, c in sorted(self._compiled.items())
        ]


def _compile(lexicon: Lexicon, specs: Mapping[str, EngineSpec], language: Callable[[str], str]) -> _Compiled:
    known = {a for spec in REGISTRY.values() for a in spec.alphabets}
    for lexeme in lexicon.lexemes:
        for p in lexeme.pronunciations:
            if p.alphabet is not None and p.alphabet not in known:
                raise LexiconError(
                    f"lexicon {lexicon.path}, line {lexeme.line}: no engine reads the phoneme alphabet "
                    f"{p.alphabet!r}; they read {_takers()}"
                )
    try:
        tag = language(lexicon.language)
    except UnknownLanguage:
        tag = lexicon.language
        log.warning("lexicon %r is in %s, which no configured voice speaks", lexicon.name, tag)
    compiled = _Compiled(lexicon, tag, lexicon.digest)
    compiled.graphemes = len({g for lx in lexicon.lexemes for g in lx.graphemes})
    for name, spec in specs.items():
        if any(v.language == tag for v in spec.voices):
            why = _table_for(compiled, name, spec.alphabets)
            if why is not None:
                compiled.unsayable[name] = why
    return compiled


def _table_for(compiled: _Compiled, engine: str, alphabets: tuple[str, ...]) -> str | None:
    """Compile the lexicon for one engine; why it cannot, if a lexeme has nothing it can say."""
    replacements: dict[str, str] = {}
    for lexeme in compiled.lexicon.lexemes:
        choice = next(
            (p for p in lexeme.pronunciations if p.alphabet is None or p.alphabet in alphabets), None
        )
        if choice is None:
            given = sorted({p.alphabet for p in lexeme.pronunciations if p.alphabet})
            takes = f"phonemes in {', '.join(alphabets)} or aliases" if alphabets else "aliases only"
            return (
                f"its lexeme {lexeme.graphemes[0]!r} (line {lexeme.line}) has phonemes in "
                f"{', '.join(given)} only, and {engine} takes {takes}"
            )
        said = choice.text if choice.alphabet is None else phoneme_span(choice.alphabet, choice.text)
        for grapheme in lexeme.graphemes:
            replacements.setdefault(grapheme, said)  # a grapheme's first lexeme wins
    compiled.tables[engine] = Table.of(replacements)
    return None


def _takers() -> str:
    """Which engines read which phoneme alphabets, for error messages and the docs."""
    readers: dict[str, list[str]] = {}
    for spec in REGISTRY.values():
        for alphabet in spec.alphabets:
            readers.setdefault(alphabet, []).append(spec.name)
    return "; ".join(f"{a}: {', '.join(names)}" for a, names in sorted(readers.items()))
