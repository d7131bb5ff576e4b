"""A support bot's replies: templates of a few sentences, most of them shared, with slots.

Real bots answer from templates: a fixed greeting, one sentence that carries the customer's order
number, date, name or amount, and a fixed closing line. Whole replies repeat only when the slot
values do, but their greetings and closings repeat all the time, which is what sentence-level reuse
is for. ``draw`` picks templates by a Zipf law (the first template is the most common) and fills
their slots from small-to-moderate pools, deterministically.
"""

from __future__ import annotations

import datetime
import random
import re
import string

from ttsd.text import split_sentences

# Shared openings and closings: most templates use one of each.
THANKS = "Thanks for calling."
SUPPORT = "Thank you for contacting customer support."
PATIENCE = "Thank you for your patience."
HI_NAME = "Hi {name}, thanks for reaching out."
ANYTHING_ELSE = "Is there anything else I can help you with?"
GREAT_DAY = "Have a great day."
QUESTIONS = "If you have any other questions, just reply to this message."
EMAILED = "We have also sent the details to your email address."

# Most common first: the Zipf rank is the position in this list.
TEMPLATES: tuple[tuple[str, ...], ...] = (
    (THANKS, "Your order {order} has shipped and should arrive by {date}.", ANYTHING_ELSE),
    (SUPPORT, "Your refund of {amount} has been issued to your original payment method.",
     "It can take three to five business days to appear on your statement.", ANYTHING_ELSE),
    (THANKS, "I can see that order {order} is out for delivery today.", ANYTHING_ELSE),
    (PATIENCE, "An agent will be with you in about two minutes."),
    (HI_NAME, "Your appointment is confirmed for {date}.", EMAILED),
    (SUPPORT, "Your current balance is {amount}, due on {date}.", ANYTHING_ELSE),
    (THANKS, "I have found your account.",
     "Your password reset link has been sent to the email address on file.", GREAT_DAY),
    (SUPPORT, "Order {order} was delayed by bad weather and will now arrive on {date}.",
     "We are sorry for the inconvenience.", ANYTHING_ELSE),
    (PATIENCE, "Your ticket {order} has been passed to our specialists.",
     "They will contact you within one business day."),
    (THANKS, "Your subscription renews on {date} for {amount}.", QUESTIONS),
    (HI_NAME, "We have updated the delivery address for order {order}.", GREAT_DAY),
    (SUPPORT, "Your payment of {amount} was declined by your bank.",
     "Please check your card details and try again.", ANYTHING_ELSE),
    (THANKS, "The replacement part for order {order} is back in stock and ships tomorrow.", ANYTHING_ELSE),
    (PATIENCE, "Your claim is being reviewed.", "We will have an answer for you by {date}.", GREAT_DAY),
    (SUPPORT, "The technician will visit on {date} between noon and four.",
     "Please make sure someone over eighteen is at home.", ANYTHING_ELSE),
    (THANKS, "We received your documents.", EMAILED),
    (HI_NAME, "Your store credit of {amount} is ready to use.", GREAT_DAY),
    (SUPPORT, "Your reservation for {date} has been cancelled.",
     "Any deposit will be returned within a week.", ANYTHING_ELSE),
    (THANKS, "Your new card will arrive within seven to ten days.",
     "Please activate it as soon as you receive it.", ANYTHING_ELSE),
    (PATIENCE, "Our offices are closed on public holidays.",
     "You can still reach us through the help center at any time."),
    (SUPPORT, "Order {order} qualifies for a free return until {date}.", EMAILED, ANYTHING_ELSE),
    (THANKS, "Your trial ends on {date}.", "After that, your plan costs {amount} a month.", QUESTIONS),
    (HI_NAME, "Your warranty covers this repair, so there is nothing to pay.", ANYTHING_ELSE),
    (SUPPORT, "We have issued a partial refund of {amount} for the missing item in order {order}.",
     ANYTHING_ELSE),
    (THANKS, "I am transferring you to our billing team now.", "Please stay on the line."),
    (SUPPORT, "Your order {order} is being prepared and will ship by {date}.", EMAILED),
    (PATIENCE, "We could not verify your account number.", "Please check it and try again.", ANYTHING_ELSE),
    (THANKS, "Your order total comes to {amount}, including shipping.", ANYTHING_ELSE),
    (HI_NAME, "Your callback is scheduled for {date}.", GREAT_DAY),
    (SUPPORT, "The item you asked about is discontinued.", "We can offer a similar model at {amount}.",
     ANYTHING_ELSE),
    (THANKS, "Order {order} was delivered on {date} and signed for at the front desk.", ANYTHING_ELSE),
    (SUPPORT, "Your account has been paused as requested.",
     "It will start again automatically on {date}.", QUESTIONS),
    (PATIENCE, "You are next in line.", "An agent will be with you shortly."),
    (THANKS, "We have sent a prepaid return label for order {order} to your email.", GREAT_DAY),
    (HI_NAME, "Your exchange has been approved.", "The new item ships on {date}.", ANYTHING_ELSE),
    (SUPPORT, "A late fee of {amount} was removed from your account as a courtesy.", ANYTHING_ELSE),
    (THANKS, "Your gift card balance is {amount}.", ANYTHING_ELSE),
    (SUPPORT, "The outage in your area should be fixed within the hour.",
     "We apologize for the disruption.", GREAT_DAY),
    (THANKS, "Your order {order} has been cancelled and you will not be charged.", EMAILED, ANYTHING_ELSE),
    (PATIENCE, "Your feedback helps us improve.", "Thank you for taking the time to share it."),
)  # fmt: skip

NAMES = (
    "Anna", "Ben", "Carlos", "Diana", "Ethan", "Fatima", "George", "Hannah", "Ivan", "Julia",
    "Kevin", "Laura", "Mohammed", "Nina", "Oscar", "Priya", "Quentin", "Rosa", "Samuel", "Tara",
    "Umar", "Victoria", "William", "Xavier", "Yuki", "Zoe", "Daniel", "Sophie", "Lucas", "Emma",
)  # fmt: skip


def _pools(seed: int) -> dict[str, tuple[str, ...]]:
    rng = random.Random(seed)
    start = datetime.date(2025, 3, 3)
    dates = tuple(f"{d:%A}, {d:%B} {d.day}" for d in (start + datetime.timedelta(days=i) for i in range(20)))
    amounts = tuple(f"${rng.randint(5, 400)}.{rng.choice((0, 49, 50, 95, 99)):02d}" for _ in range(50))
    orders = tuple(str(n) for n in rng.sample(range(10_000, 100_000), 300))
    return {"order": orders, "name": NAMES, "date": dates, "amount": amounts}


def _slots(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def draw(n: int, *, s: float = 1.0, seed: int = 2025) -> list[str]:
    """``n`` support-bot replies: templates by Zipf(``s``) over their rank, slots filled uniformly
    from their pools (300 order numbers, 30 names, 20 dates, 50 amounts). Deterministic."""
    pools = _pools(seed)
    rng = random.Random(seed + 1)
    weights = [1.0 / (rank + 1) ** s for rank in range(len(TEMPLATES))]
    texts = []
    for template in rng.choices(TEMPLATES, weights=weights, k=n):
        sentences = " ".join(template)
        values = {slot: rng.choice(pools[slot]) for slot in _slots(sentences)}
        texts.append(sentences.format(**values))
    return texts


def repeat_share(texts: list[str]) -> float:
    """Share of requests whose whole text was asked before (what a text cache can answer)."""
    return 1.0 - len(set(texts)) / len(texts) if texts else 0.0


def sentence_repeat_share(texts: list[str]) -> float:
    """Share of sentences (over all requests) that appeared before in this sample."""
    sentences = [s for text in texts for s in split_sentences(text)]
    return 1.0 - len(set(sentences)) / len(sentences) if sentences else 0.0


def unique_texts_sentences(texts: list[str]) -> tuple[int, int, int]:
    """Distinct texts, sentences of the distinct texts, and distinct sentences."""
    distinct = set(texts)
    sentences = [s for text in distinct for s in split_sentences(text)]
    return len(distinct), len(sentences), len(set(sentences))


def check() -> None:
    """Every template splits into the sentences it was written as (no abbreviation surprises)."""
    for template in TEMPLATES:
        text = " ".join(template).format(
            **{slot: pool[0] for slot, pool in _pools(0).items() if slot in _slots(" ".join(template))}
        )
        got = split_sentences(text)
        if len(got) != len(template) or not all(re.search(r"\w", s) for s in got):
            raise AssertionError(f"template splits into {len(got)} sentences: {got}")
