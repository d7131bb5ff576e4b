"""SSML as heard: what Whisper hears of every say-as kind, and the support reply of the issue spoken
right (its numbers, money and spelled words)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import transcribe
from .servers import Server
from .test_intelligibility import word_error_rate, words


@pytest.mark.slow
@pytest.mark.parametrize("server", ["embedded"], indirect=True)
@pytest.mark.parametrize("voice", ["en-joe", "en-us-female"])
def test_whisper_hears_every_say_as_kind(server: Server, whisper_base: Any, voice: str) -> None:
    """Piper and eSpeak through Whisper base: each kind said as a support line says it. (tiny.en,
    on this long a run of digits, loops on "-0-0-0…" one take in eight, and hears eSpeak's digits
    as noise one in three; neither voice says a text the same way twice.)"""
    whisper = whisper_base
    document = (
        '<speak>Call <say-as interpret-as="telephone">400-820-8820</say-as>. '
        'Your order <say-as interpret-as="digits">4521</say-as> ships on '
        '<say-as interpret-as="date" format="md">12/03</say-as> at '
        '<say-as interpret-as="time">3:30pm</say-as>. '
        'The total is <say-as interpret-as="currency">19.99</say-as>. '
        'You are <say-as interpret-as="ordinal">3</say-as> in line of '
        '<say-as interpret-as="cardinal">250</say-as>. '
        # A word that could be read whole, so spelled letters are told from it.
        'To confirm, I will spell it: <say-as interpret-as="characters">CAT</say-as>. '
        # Whisper drops the last words of a take now and then: nothing checked comes last.
        "Thank you for calling.</speak>"
    )
    # Neither voice says a text the same way twice, and Whisper mishears a word of a long take now
    # and then ("call four" as "golf r", a spelled "A" lost): each kind must be heard in one of up
    # to three takes (each at a slightly other speed, so made anew), and none may say "thousand".
    missed: set[str] | None = None
    takes = []
    for speed in (1.0, 0.97, 1.03):  # a take of its own: no sentence of it is in the cache
        body = {"input": document, "voice": voice, "response_format": "wav", "speed": speed}
        with server.client() as client:
            answer = client.post("/v1/audio/speech", json=body)
        heard = transcribe(whisper, answer.content).lower()
        takes.append(heard)
        assert "thousand" not in heard, heard
        now = _missed(heard)
        missed = now if missed is None else missed & now
        if not missed:
            break
    assert not missed, (missed, takes)


def _missed(heard: str) -> set[str]:
    """The say-as kinds of the document not heard as intended in this take."""
    # Whisper writes numbers as digits or as words ("4-0-0", "four, zero, zero", "250", "two hundred
    # and fifty"): matched in words, and digits said one by one as runs of digits.
    said = _spelled(heard).lower()
    runs = _digit_runs(said)
    kinds = {
        "telephone, digit by digit": any("4008208820" in run for run in runs),
        "digits, one by one": any("4521" in run for run in runs),
        "date": re.search(r"december\W+(?:third|three)", said),
        "time": re.search(r"3\W*30\W*p\.?\s?m", heard) or re.search(r"three\W+thirty\W+p\W*m", said),
        # As money, not "ten ninety-nine"; the cents of eSpeak's are heard as "$19.00" now and then.
        "currency": re.search(r"nineteen dollars", said),
        "ordinal": re.search(r"\bthird in li\w+", said),  # "line", heard as "life" at times
        "cardinal": re.search(r"\btwo hundred and fifty\b", said),
        # Letter by letter, not the word "cat" (base hears eSpeak's "A" as "8" and "T" as "D" or,
        # in all three takes of one CI run, "B").
        "characters, spelled": re.search(r"\bc(?:\W+(?:a|8)\W*|\W*(?:a|8)\W+)[tdb]\b", heard),
    }
    return {kind for kind, found in kinds.items() if not found}


@pytest.mark.slow
def test_the_issue_reply_is_heard_right(tmp_path: Any, whisper: Any) -> None:
    """Plain text gets the same care: the reply that came back as "hash 4,521", "12-0,3", "$10.99"."""
    from .servers import start_server, stop_server

    server = start_server(tmp_path, env={"TTSD_ENGINES": "piper", "TTSD_ENGINE_SLOTS": "1"})
    try:
        text = (
            "Please call 400-820-8820. Your order #4521 ships on 12/03 at 3:30 pm. "
            "The total is $19.99, or 20% off. Visit acme.com or email help@acme.com."
        )
        expected = (
            "please call four zero zero eight two zero eight eight two zero your order number four five two "
            "one ships on december third at three thirty p m the total is nineteen dollars and ninety nine "
            "cents or twenty percent off visit acme dot com or email help at acme dot com"
        )
        # Piper's noise cannot be seeded: about one take in five, tiny.en turns the long run of phone
        # digits into others ("400-800-888-800-800-"), drops a digit of the order number ("4-5-2") or
        # mishears a word or two (0.27 then; 0.10 usually). As for the say-as kinds above, each check
        # must pass in one of up to three takes (each at a slightly other speed, so made anew).
        heard_right: set[str] = set()
        takes = []
        for speed in (1.0, 0.97, 1.03):
            body = {"input": text, "voice": "en-joe", "response_format": "wav", "speed": speed}
            with server.client() as client:
                heard = transcribe(whisper, client.post("/v1/audio/speech", json=body).content)
            takes.append(heard)
            # What came back wrong before never does: "hash", "$10.99".
            assert "hash" not in heard.lower() and "$10.99" not in heard, heard
            checks = {
                "the date": "December" in heard,
                "the order number": any("4521" in run for run in _digit_runs(heard)),
                "the amount": "19.99" in heard,
                "the rest": word_error_rate(words(expected), words(_spelled(heard))) < 0.35,
            }
            heard_right |= {name for name, passed in checks.items() if passed}
            if heard_right == set(checks):
                break
        assert heard_right == set(checks), (heard_right, takes)
    finally:
        stop_server(server)


_DIGIT_WORDS = (
    {
        word: str(digit)
        for digit, word in enumerate("zero one two three four five six seven eight nine".split())  # noqa: SIM905
    }
    | {"for": "4"}
    | dict.fromkeys(("nilo", "niro", "nero", "nelo"), "0")
)  # "four"; eSpeak's "zero" as heard


def _digit_runs(heard: str) -> list[str]:
    """The runs of digits in a transcript, whether Whisper wrote them as digits or words, whatever
    came between them."""
    runs, run = [], ""
    for token in re.findall(r"\d+|[a-z]+", heard.lower()):
        digit = token if token.isdigit() else _DIGIT_WORDS.get(token)
        if digit is None:
            runs.append(run)
            run = ""
        else:
            run += digit
    return [r for r in [*runs, run] if r]


def _spelled(heard: str) -> str:
    """Whisper writes digits; the reference is in words."""
    from ttsd.textnorm.en import normalize

    # Phone digits as Whisper groups them ("400-800-8820"): one by one, as the reference has them.
    grouped = re.sub(r"\d+(?:-\d*)+", lambda m: " ".join(ch for ch in m.group() if ch.isdigit()), heard)
    return normalize(grouped)
