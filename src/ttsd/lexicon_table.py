"""A compiled lexicon table: graphemes and what an engine is given for each, matched in one pass.

At every place in a sentence, the longest grapheme found there is replaced, leftmost first. A
grapheme that starts or ends with a letter or digit matches whole words only, except in scripts
written without spaces (Chinese, Japanese, Thai...), where it matches anywhere. Matching is
case-sensitive, as PLS says.

Graphemes are indexed by their first character with their lengths, longest first, and one compiled
pattern finds the places where a grapheme may start (its first character, at a word start where it
needs one), so a sentence is rewritten in a few dictionary lookups per such place, however large
the lexicon.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Scripts written without spaces between words: a grapheme there needs no word boundary.
_UNSPACED_RANGES = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003ffff"
)
_UNSPACED = re.compile(f"[{_UNSPACED_RANGES}]")
# A character that continues a word written with spaces around it (\w: alphanumerics and "_").
_WORDLIKE = f"[^\\W{_UNSPACED_RANGES}]"


def _wordlike(ch: str) -> bool:
    return (ch.isalnum() or ch == "_") and _UNSPACED.match(ch) is None


@dataclass(frozen=True)
class Table:
    """Graphemes and what an engine is given for each, indexed for the longest match."""

    replacements: Mapping[str, str]
    lengths: Mapping[str, tuple[int, ...]]  # first character -> grapheme lengths, longest first
    starts: re.Pattern[str]  # where a grapheme may start

    @classmethod
    def of(cls, replacements: Mapping[str, str]) -> Table:
        lengths: dict[str, set[int]] = {}
        for grapheme in replacements:
            lengths.setdefault(grapheme[0], set()).add(len(grapheme))
        firsts = sorted(lengths)
        word = "".join(re.escape(ch) for ch in firsts if _wordlike(ch))
        other = "".join(re.escape(ch) for ch in firsts if not _wordlike(ch))
        starts = [f"(?<!{_WORDLIKE})[{word}]"] if word else []
        starts += [f"[{other}]"] if other else []
        return cls(
            replacements,
            {ch: tuple(sorted(ls, reverse=True)) for ch, ls in lengths.items()},
            re.compile("|".join(starts) or "(?!)"),
        )

    def speak(self, text: str) -> str:
        """``text`` with every grapheme replaced, leftmost first, the longest at each place."""
        lengths, replacements, search = self.lengths, self.replacements, self.starts.search
        out: list[str] = []
        n, done = len(text), 0
        found = search(text)
        while found is not None:
            i = found.start()
            for length in lengths[text[i]]:
                end = i + length
                said = replacements.get(text[i:end]) if end <= n else None
                if said is not None and (
                    end == n or not _wordlike(text[end - 1]) or not _wordlike(text[end])
                ):
                    out.append(text[done:i])
                    out.append(said)
                    done = end
                    found = search(text, end)
                    break
            else:
                found = search(text, i + 1)
        if not out:
            return text
        out.append(text[done:])
        return "".join(out)
