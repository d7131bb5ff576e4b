"""Text normalisation and sentence splitting.

Normalisation decides cache identity (two requests that sound the same should share a key), so it
is deliberately conservative: Unicode NFC, control characters dropped, whitespace collapsed (line
breaks kept as sentence boundaries). Numbers are left to the engines' own front ends, which read
them in the voice's language.

Splitting is done here, not in the engines, so every engine streams sentence by sentence and a long
text never reaches a model as one piece.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import EmptyText, InvalidText, TextTooLong

_KEEP_CONTROLS = {"\n", "\t", "\r"}
_SPACES = re.compile(r"[^\S\n]+")
_NEWLINES = re.compile(r"\s*\n\s*")

# Terminal punctuation. CJK terminators end a sentence with no space after them; Latin ones need
# whitespace (so "3.14" and "example.com" stay whole).
_CJK_END = "。！？；…"
_LATIN_END = ".!?…"
_CLOSERS = "\"'”’)]}」』）》"
_SENTENCE_END = re.compile(
    rf"(?:[{_CJK_END}]+[{re.escape(_CLOSERS)}]*)"
    rf"|(?:[{re.escape(_LATIN_END)}]+[{re.escape(_CLOSERS)}]*(?=\s))"
    r"|\n"
)
_CLAUSE = re.compile(r"(?<=[,;:，、；：—])\s*")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e no vol fig approx dept est mt ft inc ltd co corp".split()  # noqa: SIM905
)

MAX_PIECE_CHARS = 300


def normalize(text: str, *, max_chars: int) -> str:
    """Canonical form of a request text; raises on text that cannot be spoken or stored."""
    if "\x00" in text:
        raise InvalidText("text contains NUL bytes")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidText("text is not valid Unicode (lone surrogate)") from exc
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch if ch in _KEEP_CONTROLS or unicodedata.category(ch) != "Cc" else " " for ch in text)
    text = text.replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _NEWLINES.sub("\n", text).strip()
    if not text or not any(ch.isalnum() for ch in text):
        raise EmptyText("text is empty (nothing to speak)")
    if len(text) > max_chars:
        raise TextTooLong(
            f"text is {len(text)} characters after normalisation; the limit is {max_chars}",
            details={"length": len(text), "limit": max_chars},
        )
    return text


def script_language(text: str) -> str | None:
    """The language a text's script says, for a request that names neither voice nor language:
    kana is Japanese, Han (without kana) Mandarin, whichever outweighs the Latin letters (a
    character weighs three letters, as in the splitter); None: Latin, or nothing to tell."""
    kana = han = latin = 0
    for ch in text:
        code = ord(ch)
        if 0x3040 <= code <= 0x30FF:
            kana += 1
        elif 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF:
            han += 1
        elif ch.isascii() and ch.isalpha():
            latin += 1
    if 3 * (kana + han) <= latin:
        return None
    return "ja" if kana else "cmn" if han else None


def clean(text: str) -> str:
    """A piece of a text that is still arriving, made safe to buffer: NFC, control characters but
    line breaks as spaces. Whitespace is collapsed later, when each sentence is normalised."""
    text = unicodedata.normalize("NFC", text).replace("\r", "\n")
    return "".join(ch if ch in _KEEP_CONTROLS or unicodedata.category(ch) != "Cc" else " " for ch in text)


def _is_abbreviation(text: str, end: int) -> bool:
    """True for a period that closes "Dr." or an initial ("J. K. Rowling"), not a sentence."""
    if text[end - 1] != ".":
        return False
    start = max(text.rfind(" ", 0, end - 1), text.rfind("\n", 0, end - 1)) + 1
    word = text[start : end - 1].lstrip("(\"'“‘").lower()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


# Marks a first sentence may be cut at, so live speech starts early: CJK ones at once, Latin ones
# followed by a space (never "3,500").
_CLAUSE_MARK = re.compile(r"[，、；：]|[,;:](?=\s)")
# What a live sentence may start with that belongs to the one before it (it came in a later delta).
_LEADING = "".join(sorted(set(_CJK_END + "」』）》”’")))


def weight(text: str) -> int:
    """A length in Latin letters: a Han, kana or hangul character says about three of them."""
    return sum(3 if ord(ch) >= 0x2E80 else 1 for ch in text)


class SentenceSplitter:
    """Cuts text into sentences as it arrives, for whole texts and live input alike.

    A sentence is complete at a CJK terminator (``。！？；…``) or a line break at once, and at a
    Latin one (``.?!``) once whitespace follows it, so "3.5", "Mr. Smith", "e.g. this" and
    "acme.com" stay whole while more text may still come; ``flush`` ends what is buffered. Pieces
    over ``max_chars`` are cut at clauses, else spaces. With ``first_clause`` set (live input), the
    first sentence is also cut at a clause mark once the clause weighs that many Latin letters, so
    speech starts before the sentence is written; whole texts never are, so their sentences (and
    cache keys) are what ``split_sentences`` always gave."""

    def __init__(self, *, max_chars: int = MAX_PIECE_CHARS, first_clause: int | None = None) -> None:
        self._buf = ""
        self._max = max_chars
        self._first_clause = first_clause
        self.sentences = 0  # emitted so far

    @property
    def pending(self) -> str:
        """What is buffered and not yet a sentence."""
        return self._buf

    def feed(self, text: str) -> list[str]:
        """Add text; the sentences it completed."""
        self._buf += text
        return self._take(final=False)

    def flush(self) -> list[str]:
        """Everything buffered, as sentences, complete or not."""
        return self._take(final=True)

    def flush_text(self, text: str) -> list[str]:
        """``text`` added and everything flushed: a whole text's sentences."""
        self._buf += text
        return self._take(final=True)

    def _take(self, *, final: bool) -> list[str]:
        text, start, raw = self._buf, 0, []
        for match in _SENTENCE_END.finditer(text):
            end = match.end()
            if match.group() != "\n" and _is_abbreviation(text, match.start() + 1):
                continue
            raw.append(text[start:end])
            start = end
        rest = text[start:]
        if final:
            raw.append(rest)
            rest = ""
        elif not raw and self._first_clause is not None and self.sentences == 0:
            raw, rest = self._first_cut(rest)
        while not final and len(rest) > self._max:
            # A run-on with no end in sight: cut at its last clause, else space, that fits.
            head = rest[: self._max]
            cut = max((m.end() for m in _CLAUSE.finditer(head) if m.end() < len(head)), default=0)
            cut = cut or head.rfind(" ") + 1 or self._max
            raw.append(rest[:cut])
            rest = rest[cut:]
        out = [p for piece in raw for p in self._pieces(piece)]
        self._buf = rest
        self.sentences += len(out)
        return out

    def _first_cut(self, text: str) -> tuple[list[str], str]:
        assert self._first_clause is not None
        for match in _CLAUSE_MARK.finditer(text):
            if weight(text[: match.end()].strip()) >= self._first_clause:
                return [text[: match.end()]], text[match.end() :]
        return [], text

    def _pieces(self, piece: str) -> list[str]:
        piece = piece.strip()
        if self.sentences or self._first_clause is not None:
            piece = piece.lstrip(_LEADING + " ")
        if not piece or not any(ch.isalnum() for ch in piece):
            return []
        return _split_long(piece, self._max)


def split_sentences(text: str, *, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """Pieces of at most ``max_chars`` characters, cut at sentence ends, else clauses, else spaces."""
    return SentenceSplitter(max_chars=max_chars).flush_text(text)


def _split_long(piece: str, max_chars: int) -> list[str]:
    if len(piece) <= max_chars:
        return [piece]
    out: list[str] = []
    current = ""
    for clause in _CLAUSE.split(piece):
        for part in _hard_split(clause, max_chars):
            if current and len(current) + 1 + len(part) > max_chars:
                out.append(current)
                current = part
            else:
                current = f"{current} {part}" if current else part
    if current:
        out.append(current)
    return [p.strip() for p in out if p.strip()]


def _hard_split(clause: str, max_chars: int) -> list[str]:
    """Cut at spaces; a run with no spaces at all (CJK without punctuation) is cut by length."""
    if len(clause) <= max_chars:
        return [clause]
    out: list[str] = []
    current = ""
    for word in clause.split(" "):
        while len(word) > max_chars:
            if current:
                out.append(current)
                current = ""
            out.append(word[:max_chars])
            word = word[max_chars:]
        if current and len(current) + 1 + len(word) > max_chars:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        out.append(current)
    return out
