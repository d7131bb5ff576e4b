"""W3C Pronunciation Lexicon Specification (PLS 1.0) files, the format Amazon Polly and Azure take.

    <lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon"
             alphabet="x-espeak" xml:lang="en-US">
      <lexeme><grapheme>ACME</grapheme><alias>Ack-mee</alias></lexeme>
      <lexeme><grapheme>Xfinity</grapheme><phoneme>Eksf'InIti</phoneme></lexeme>
    </lexicon>

A lexeme has one or more graphemes (the written forms it replaces) and one or more pronunciations:
an ``<alias>`` (a respelling, spoken as text) or a ``<phoneme>`` in an alphabet (the lexicon's, or
its own ``alphabet`` attribute). As PLS says, the first pronunciation marked ``prefer="true"``
comes first, else document order; ttsd gives each engine the first one it can say.

Parsed with expat so that every error names its line; a DOCTYPE (and with it any entity) is
refused, as PLS has no use for one.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.parsers import expat

from .errors import ConfigError

NAMESPACE = "http://www.w3.org/2005/01/pronunciation-lexicon"
_XML_LANG = "http://www.w3.org/XML/1998/namespace lang"
_SPACES = re.compile(r"\s+")


class LexiconError(ConfigError):
    """A lexicon file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class Pronunciation:
    kind: Literal["alias", "phoneme"]
    text: str
    alphabet: str | None = None  # phonemes only


@dataclass(frozen=True)
class Lexeme:
    graphemes: tuple[str, ...]
    pronunciations: tuple[Pronunciation, ...]  # the preferred first
    line: int


@dataclass(frozen=True)
class Lexicon:
    name: str
    path: Path
    language: str  # xml:lang as written
    lexemes: tuple[Lexeme, ...]

    @property
    def digest(self) -> str:
        """The content's hash: what changes the speech, not comments, layout or the file's name."""
        content = [
            self.language,
            [
                [lx.graphemes, [(p.kind, p.alphabet, p.text) for p in lx.pronunciations]]
                for lx in self.lexemes
            ],
        ]
        canonical = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


@dataclass
class _Element:
    tag: str  # local name; elements outside the PLS namespace are refused
    attrs: dict[str, str]
    line: int
    text: str = ""
    children: list[_Element] | None = None


def clean(text: str) -> str:
    """A grapheme or alias as request text is normalised: NFC, whitespace collapsed."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


def read(path: Path, name: str) -> Lexicon:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LexiconError(f"lexicon {path}: cannot be read ({exc.strerror or exc})") from exc
    root = _parse(data, path)
    where = f"lexicon {path}, line {root.line}"
    if root.tag != "lexicon":
        raise LexiconError(f"{where}: the root element is <{root.tag}>, not <lexicon>")
    language = root.attrs.get(_XML_LANG, "").strip()
    if not language:
        raise LexiconError(f"{where}: <lexicon> has no xml:lang (the language it applies to)")
    alphabet = root.attrs.get("alphabet", "").strip().lower() or None
    lexemes = []
    for child in root.children or ():
        if child.tag == "lexeme":
            lexemes.append(_lexeme(child, alphabet, path))
        elif child.tag not in ("meta", "metadata"):
            raise LexiconError(f"lexicon {path}, line {child.line}: unexpected <{child.tag}> in <lexicon>")
    return Lexicon(name, path, language, tuple(lexemes))


def _lexeme(element: _Element, alphabet: str | None, path: Path) -> Lexeme:
    graphemes: list[str] = []
    preferred: list[Pronunciation] = []
    others: list[Pronunciation] = []
    for child in element.children or ():
        where = f"lexicon {path}, line {child.line}"
        text = clean(child.text)
        if child.tag == "grapheme":
            if not text:
                raise LexiconError(f"{where}: empty <grapheme>")
            if preferred or others:
                raise LexiconError(f"{where}: <grapheme> after a pronunciation (graphemes come first)")
            graphemes.append(text)
            continue
        if child.tag == "example":
            continue
        if child.tag == "alias":
            if not any(ch.isalnum() for ch in text):
                raise LexiconError(f"{where}: <alias> has nothing to say")
            pronunciation = Pronunciation("alias", text)
        elif child.tag == "phoneme":
            own = child.attrs.get("alphabet", "").strip().lower() or alphabet
            if own is None:
                raise LexiconError(
                    f"{where}: <phoneme> without an alphabet (set alphabet= on it or on <lexicon>)"
                )
            if not text:
                raise LexiconError(f"{where}: empty <phoneme>")
            if "[[" in text or "]]" in text:
                raise LexiconError(f"{where}: <phoneme> holds '[[' or ']]'; write the phonemes alone")
            pronunciation = Pronunciation("phoneme", text, own)
        else:
            raise LexiconError(f"{where}: unexpected <{child.tag}> in <lexeme>")
        prefer = child.attrs.get("prefer", "false").strip()
        if prefer not in ("true", "false"):
            raise LexiconError(f'{where}: prefer="{prefer}" (PLS allows "true" or "false")')
        (preferred if prefer == "true" else others).append(pronunciation)
    where = f"lexicon {path}, line {element.line}"
    if not graphemes:
        raise LexiconError(f"{where}: <lexeme> has no <grapheme>")
    if not preferred and not others:
        raise LexiconError(f"{where}: <lexeme> has no <alias> or <phoneme>")
    return Lexeme(tuple(graphemes), tuple(preferred + others), element.line)


def _parse(data: bytes, path: Path) -> _Element:
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Element] = []
    root: list[_Element] = []

    def where() -> str:
        return f"lexicon {path}, line {parser.CurrentLineNumber}"

    def start(name: str, attrs: dict[str, str]) -> None:
        namespace, _, tag = name.rpartition(" ")
        if namespace not in ("", NAMESPACE):
            raise LexiconError(f"{where()}: <{tag}> is not in the PLS namespace ({NAMESPACE})")
        element = _Element(tag, attrs, parser.CurrentLineNumber)
        if stack:
            parent = stack[-1]
            if parent.tag in ("grapheme", "alias", "phoneme"):
                raise LexiconError(f"{where()}: <{tag}> inside <{parent.tag}> (it holds text only)")
            if parent.children is None:
                parent.children = []
            parent.children.append(element)
        else:
            root.append(element)
        stack.append(element)

    def end(_name: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text += data

    def doctype(*_: object) -> None:
        raise LexiconError(f"{where()}: a DOCTYPE is not allowed in a lexicon")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = doctype
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        message = expat.ErrorString(exc.code) if exc.code else str(exc)
        raise LexiconError(f"lexicon {path}, line {exc.lineno}: not well-formed XML ({message})") from exc
    return root[0]
