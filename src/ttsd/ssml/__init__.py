"""SSML in: a ``<speak>`` document compiled into what the service speaks, sentence by sentence.

The unit of reuse stays the sentence. ``say-as`` and ``sub`` become the words the engine is given,
``phoneme`` a phoneme span (as a lexicon's), so the same words share one cached sentence however
they were marked up. ``break``, ``p`` and ``s`` end a sentence and put silence between sentences
when they are joined, never inside a cached one; ``prosody rate`` is a sentence's own speed; a
``mark`` ends the sentence before it too, so its offset is exact; ``lexicon`` names a lexicon as
the request's ``lexicons`` field does. Any other element is spoken as its content and named in
``Plan.ignored``, the same on every route. Parsing refuses DTDs, entities and external references
(defusedxml), and bounds depth and size; a document that is not well-formed is an error naming
its line and column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidSsml
from ..text import split_sentences
from .sayas import say_as

MAX_DEPTH = 32
MAX_ELEMENTS = 2000
MAX_BREAK = 10.0  # seconds, as Polly caps a break
_STRENGTH = {"none": 0.0, "x-weak": 0.1, "weak": 0.2, "medium": 0.4, "strong": 0.75, "x-strong": 1.2}
_RATE = {"x-slow": 0.6, "slow": 0.8, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.5}
_PARAGRAPH_PAUSE = 0.4
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")
# Spaces only: a phoneme span's separator (\x1f) counts as whitespace to str.split and \s.
_SPACES = re.compile(r"[ \t\n\r\f\v\u00a0\u3000]+")
_TIGHT = re.compile(r"[ \t\n\r\f\v]+([.,!?;:。，！？；：])")  # a say-as before a full stop: no space between
_CJK_SPACE = re.compile(r"(?<=[\u3000-\u9fff]) +| +(?=[\u3000-\u9fff])")  # Chinese has no spaces
_SPEAK = re.compile(r"<speak[\s>/]")


def is_ssml(text: str) -> bool:
    """A text that is a ``<speak>`` document (recognised without being asked for): markup first
    (an XML declaration or a DTD may come before the root: it is refused then, never read out)."""
    return text.lstrip()[:1] == "<" and _SPEAK.search(text, 0, 4096) is not None


@dataclass(frozen=True)
class Plan:
    """What a document says: sentences (engine input), each one's speed ratio and the silence
    before it (None: the usual pause between sentences), the silence after the last, marks (name,
    the sentence they precede, seconds into the silence before it), lexicons it named, and the
    elements it spoke only the content of."""

    sentences: tuple[str, ...]
    rates: tuple[float, ...]
    pauses: tuple[float | None, ...]
    tail: float = 0.0
    marks: tuple[tuple[str, int, float], ...] = ()
    lexicons: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


@dataclass
class _Builder:
    language: str
    alphabets: tuple[str, ...]
    speak_phonemes: Any  # (alphabet, phonemes) -> span text
    runs: list[str] = field(default_factory=list)
    rate: float = 1.0
    pause: float | None = None
    sentences: list[str] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    pauses: list[float | None] = field(default_factory=list)
    marks: list[tuple[str, int, float]] = field(default_factory=list)
    lexicons: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    elements: int = 0

    def flush(self) -> None:
        text = _CJK_SPACE.sub("", _TIGHT.sub(r"\1", _SPACES.sub(" ", "".join(self.runs)).strip()))
        self.runs.clear()
        for sentence in split_sentences(text) if text else []:
            self.sentences.append(sentence)
            self.rates.append(self.rate)
            self.pauses.append(self.pause)
            self.pause = None

    def silence(self, seconds: float) -> None:
        self.flush()
        self.pause = min(MAX_BREAK, (self.pause or 0.0) + seconds)

    def walk(self, node: Any, depth: int) -> None:
        self.elements += 1
        if depth > MAX_DEPTH or self.elements > MAX_ELEMENTS:
            raise InvalidSsml(
                f"the document is nested deeper than {MAX_DEPTH} or has over {MAX_ELEMENTS} elements"
            )
        tag = node.tag.rpartition("}")[2] if isinstance(node.tag, str) else ""
        handled = self._element(tag, node, depth)
        if not handled:
            self._content(node, depth)
        if node.tail:
            self.runs.append(node.tail)

    def _content(self, node: Any, depth: int) -> None:
        if node.text:
            self.runs.append(node.text)
        for child in node:
            self.walk(child, depth + 1)

    def _element(self, tag: str, node: Any, depth: int) -> bool:
        attrs = node.attrib
        if tag in ("speak", "voice", "lang", "emphasis", "w", "token", "audio"):
            if tag not in ("speak",):
                self.ignored.append(tag)
            return False
        if tag == "break":
            self.silence(_break(attrs))
            return True
        if tag in ("p", "s"):
            self.flush()
            self._content(node, depth)
            self.flush()
            if tag == "p":
                self.pause = max(self.pause or 0.0, _PARAGRAPH_PAUSE)
            return True
        if tag == "mark":
            self.flush()
            # Seconds of the silence to come that were already there: a mark after a break is at
            # its end, one before it at its start.
            self.marks.append((attrs.get("name", ""), len(self.sentences), self.pause or 0.0))
            return True
        if tag == "lexicon":
            name = attrs.get("name") or attrs.get("uri") or ""
            self.lexicons.append(name)
            return True
        if tag == "sub":
            self.runs.append(f" {attrs.get('alias', '')} ")
            return True
        if tag == "say-as":
            text = "".join(node.itertext())
            said = say_as(text, attrs.get("interpret-as", ""), attrs.get("format", ""), self.language)
            if said is None:
                self.ignored.append(f"say-as interpret-as={attrs.get('interpret-as', '')}")
            self.runs.append(f" {said if said is not None else text} ")
            return True
        if tag == "phoneme":
            alphabet = attrs.get("alphabet", "ipa").strip().lower()
            if alphabet not in self.alphabets:
                raise InvalidSsml(
                    f"<phoneme alphabet={alphabet!r}>: this voice's engine reads "
                    f"{', '.join(self.alphabets) or 'no phoneme alphabet'}"
                )
            self.runs.append(self.speak_phonemes(alphabet, attrs.get("ph", "")))
            return True
        if tag == "prosody":
            self.flush()
            before = self.rate
            self.rate = before * _rate(attrs.get("rate"))
            self._content(node, depth)
            self.flush()
            self.rate = before
            return True
        self.ignored.append(tag or "?")
        return False


def _break(attrs: dict[str, str]) -> float:
    if "time" in attrs:
        found = _TIME.match(attrs["time"])
        if found is None:
            raise InvalidSsml(f"<break time={attrs['time']!r}>: give it in s or ms (500ms, 1.5s)")
        seconds = float(found.group(1)) / (1000 if found.group(2) == "ms" else 1)
        return min(MAX_BREAK, seconds)
    strength = attrs.get("strength", "medium").strip().lower()
    if strength not in _STRENGTH:
        raise InvalidSsml(f"<break strength={strength!r}>: one of {', '.join(_STRENGTH)}")
    return _STRENGTH[strength]


def _rate(value: str | None) -> float:
    if value is None:
        return 1.0
    value = value.strip().lower()
    if value in _RATE:
        return _RATE[value]
    found = re.fullmatch(r"(\d+(?:\.\d+)?)%", value)
    if found is None:
        raise InvalidSsml(f"<prosody rate={value!r}>: a percentage (80%) or one of {', '.join(_RATE)}")
    return float(found.group(1)) / 100


def compile_ssml(document: str, *, language: str, alphabets: Iterable[str], speak_phonemes: Any) -> Plan:
    """The document's plan for a voice of ``language`` whose engine reads ``alphabets``;
    ``speak_phonemes(alphabet, phonemes)`` makes the span an engine reads them from."""
    from .parse import parse

    root = parse(document)
    if root.tag.rpartition("}")[2] != "speak":
        raise InvalidSsml("an SSML document's root element is <speak>")
    builder = _Builder(language, tuple(alphabets), speak_phonemes)
    builder.walk(root, 0)
    builder.flush()
    if not builder.sentences:
        raise InvalidSsml("the document says nothing")
    tail = builder.pause or 0.0
    return Plan(
        tuple(builder.sentences),
        tuple(builder.rates),
        tuple(builder.pauses),
        tail,
        tuple(builder.marks),
        tuple(dict.fromkeys(n for n in builder.lexicons if n)),
        tuple(dict.fromkeys(builder.ignored)),
    )
