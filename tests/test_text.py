from __future__ import annotations

import pytest

from ttsd.errors import EmptyText, InvalidText, TextTooLong
from ttsd.text import normalize, split_sentences


def test_normalize_collapses_whitespace_and_drops_controls() -> None:
    assert normalize("  Hello\t\tworld \x07!  ", max_chars=100) == "Hello world !"
    assert normalize("one\r\n\r\n  two", max_chars=100) == "one\ntwo"


def test_normalize_is_nfc() -> None:
    decomposed = "Cafe\u0301"
    assert normalize(decomposed, max_chars=100) == "Caf\u00e9"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "...", "?!"])
def test_empty_text_is_rejected(text: str) -> None:
    with pytest.raises(EmptyText):
        normalize(text, max_chars=100)


@pytest.mark.parametrize("text", ["a\x00b", "bad \ud800 surrogate"])
def test_unspeakable_text_is_rejected(text: str) -> None:
    with pytest.raises(InvalidText):
        normalize(text, max_chars=100)


def test_limit_counts_normalised_characters() -> None:
    assert normalize("a" + " " * 50 + "b", max_chars=3) == "a b"
    with pytest.raises(TextTooLong) as info:
        normalize("abcd", max_chars=3)
    assert info.value.status == 413


def test_english_sentences_keep_abbreviations_and_decimals() -> None:
    text = "Dr. Smith paid 3.14 dollars, e.g. a lot! Did J. K. Rowling agree? Yes."
    assert split_sentences(text) == [
        "Dr. Smith paid 3.14 dollars, e.g. a lot!",
        "Did J. K. Rowling agree?",
        "Yes.",
    ]


def test_chinese_sentences_split_without_spaces() -> None:
    assert split_sentences("你好。今天天气很好！我们走吧") == ["你好。", "今天天气很好！", "我们走吧"]


def test_line_breaks_end_sentences() -> None:
    assert split_sentences("Title\nBody text here.") == ["Title", "Body text here."]


def test_long_pieces_are_bounded() -> None:
    long_clause = ", ".join(["word " * 20] * 10)
    pieces = split_sentences(long_clause, max_chars=120)
    assert all(len(p) <= 120 for p in pieces)
    assert " ".join(pieces).split() == long_clause.replace(",", " ,").replace(" ,", ",").split()
    cjk = "字" * 700
    assert [len(p) for p in split_sentences(cjk, max_chars=300)] == [300, 300, 100]
