"""English text normalisation: support-line text written as it is said (textnorm/en.py)."""

from __future__ import annotations

import pytest

from ttsd.textnorm.en import applies, normalize

CASES = [
    ("Please call 400-820-8820.", "Please call four, zero, zero; eight, two, zero; eight, eight, two, zero."),
    ("Call (555) 123-4567 now.", "Call five, five, five; one, two, three; four, five, six, seven now."),
    ("Call 1-800-555-0199.", "Call one; eight, zero, zero; five, five, five; zero, one, nine, nine."),
    ("Your order #4521 ships.", "Your order number four, five, two, one ships."),
    ("Ticket 8812 is open.", "Ticket eight, eight, one, two is open."),
    ("Card ending in 4321 was blocked.", "Card ending in four, three, two, one was blocked."),
    ("Tracking 94001118.", "Tracking nine, four, zero, zero, one, one, one, eight."),
    (
        "The total is $19.99, or 20% off.",
        "The total is nineteen dollars and ninety nine cents, or twenty percent off.",
    ),
    (
        "It costs $1,234.50 or €20.",
        "It costs one thousand two hundred and thirty four dollars and fifty cents or twenty euros.",
    ),
    ("Only $1 today.", "Only one dollar today."),
    ("Rates rose 3.5% today.", "Rates rose three point five percent today."),
    ("It ships on 12/03 at 3:30 pm.", "It ships on December third at three thirty p m."),
    ("Due 2026-12-05.", "Due December fifth, twenty twenty six."),
    ("Due 12/05/2026.", "Due December fifth, twenty twenty six."),
    ("We open at 9:00 am and close at 17:00.", "We open at nine a m and close at seventeen hundred."),
    ("Back at 9:05.", "Back at nine oh five."),
    ("You are 3rd in line.", "You are third in line."),
    (
        "We served 4,521 callers in 2026.",
        "We served four thousand five hundred and twenty one callers in twenty twenty six.",
    ),
    ("Visit acme.com or email help@acme.com.", "Visit acme dot com or email help at acme dot com."),
    ("See https://www.acme.com/help for more.", "See w w w dot acme dot com slash help for more."),
    ("Terms & conditions apply.", "Terms and conditions apply."),
]


@pytest.mark.parametrize(("written", "said"), CASES, ids=[c[0] for c in CASES])
def test_support_line_english(written: str, said: str) -> None:
    assert normalize(written) == said


def test_text_it_cannot_change_is_left_alone_and_keeps_its_key() -> None:
    assert not applies("Thanks for calling. Mr. Smith will call you back.")
    assert normalize("Thanks for calling.") == "Thanks for calling."
