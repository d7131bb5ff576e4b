from __future__ import annotations

import pytest

from ttsd.errors import EmptyText, InvalidText, TextTooLong
from ttsd.text import MAX_PIECE_CHARS, SentenceSplitter, clean, normalize, split_sentences


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


def live(text: str, step: int = 1, first_clause: int | None = 20) -> list[tuple[int | str, str]]:
    """Sentences as a live splitter gives them when ``text`` arrives ``step`` characters at a
    time: with how much of the text had arrived when each came out ("flush": at the end)."""
    splitter = SentenceSplitter(first_clause=first_clause)
    out: list[tuple[int | str, str]] = []
    for i in range(0, len(text), step):
        out += [(i + step, s) for s in splitter.feed(text[i : i + step])]
    return out + [("flush", s) for s in splitter.flush()]


def test_live_sentences_come_out_the_moment_they_are_complete() -> None:
    text = "It costs $3.50, e.g. at acme.com or help@acme.com. Mr. Smith agreed! Bye"
    got = live(text)
    # A Latin end needs the space after it: "3.5", "e.g." and the addresses never cut a sentence.
    assert got == [
        (text.index("Mr."), "It costs $3.50, e.g. at acme.com or help@acme.com."),
        (text.index("Bye"), "Mr. Smith agreed!"),
        ("flush", "Bye"),
    ]


def test_cjk_ends_and_line_breaks_are_at_once() -> None:
    assert live("您好！请问有什么可以帮您？谢谢", first_clause=None) == [
        (3, "您好！"),
        (13, "请问有什么可以帮您？"),
        ("flush", "谢谢"),
    ]
    assert live("First line\nsecond line") == [(11, "First line"), ("flush", "second line")]


def test_the_first_sentence_may_start_at_a_long_enough_clause() -> None:
    text = "Thanks for calling our support line, your order 4,521 has shipped today, and more."
    got = live(text)
    assert got[0] == (text.index(",") + 2, "Thanks for calling our support line,")
    # Only the first: the rest waits for its end ("4,521" is no clause).
    assert got[1:] == [("flush", "your order 4,521 has shipped today, and more.")]
    # A Han character weighs three letters: eight of them make a clause long enough.
    assert live("您好欢迎致电客户服务，请问")[0] == (11, "您好欢迎致电客户服务，")
    assert live("您好，请问有什么可以帮您")[0][0] == "flush"


def test_a_run_on_is_cut_before_it_passes_the_piece_limit() -> None:
    got = live("word " * 130, step=7, first_clause=None)
    assert all(len(s) <= MAX_PIECE_CHARS for _, s in got)
    assert isinstance(got[0][0], int) and " ".join(s for _, s in got) == ("word " * 130).strip()


@pytest.mark.parametrize("step", [1, 3, 17])
def test_live_and_whole_texts_split_alike(step: int) -> None:
    """Without the early clause, text arriving in pieces splits as the whole text does, so its
    sentences share their cache keys. (A run of CJK ends, "……", is cut at its first when it comes
    a character at a time: they are said at once.)"""
    text = (
        "Thank you for calling. Your order #4521 ships on 12/03 at 3:30 pm. The total is $19.99! "
        "Visit acme.com, or write to help@acme.com. 欢迎致电客户服务中心。请问有什么可以帮您？好的…谢谢"
    )
    assert [s for _, s in live(text, step, first_clause=None)] == split_sentences(text)


def test_clean_keeps_line_breaks_and_drops_controls() -> None:
    assert clean("a\x07b\r\nc\u0065\u0301") == "a b\n\ncé"
