"""The support-bot text mix: a few hundred phrases drawn with a Zipf law, so most requests repeat."""

from __future__ import annotations

import random

_OPENERS = [
    "Thank you for calling", "Welcome back", "Hello and thank you for waiting", "Good morning",
    "Thanks for your patience", "Hi there", "We appreciate your call", "Thanks for reaching out",
]  # fmt: skip
_BODIES = [
    "your order has shipped and will arrive on Tuesday",
    "your refund was issued to your original payment method",
    "an agent will be with you in about two minutes",
    "your appointment is confirmed for tomorrow at ten",
    "we could not verify your account number",
    "your package is out for delivery today",
    "your subscription renews at the end of the month",
    "the store closes at nine this evening",
    "please have your order number ready",
    "your ticket has been escalated to our specialists",
    "the outage in your area should be fixed within the hour",
    "your password reset link has been sent",
    "you can also find answers on our help center",
    "we have updated your delivery address",
    "your balance is due on the fifteenth",
    "the replacement part is back in stock",
    "your claim is being reviewed",
    "our team will call you back within one business day",
    "your card has been activated",
    "this call may be recorded for quality purposes",
    "press one to hear these options again",
    "your reservation has been cancelled",
    "the technician will arrive between noon and four",
    "we received your documents",
    "your loyalty points have been added",
    "the item you asked about is discontinued",
    "we sent a confirmation to your email",
    "your trial ends in three days",
    "your feedback helps us improve",
    "our offices are closed on public holidays",
    "the delay was caused by bad weather",
    "your warranty covers this repair",
    "your new card will arrive within a week",
    "you are next in line",
    "the meeting has been moved to Thursday",
    "your payment was declined",
    "we have paused your account as requested",
    "your order total is forty two dollars",
]  # fmt: skip


def phrases(count: int = 300) -> list[str]:
    """``count`` distinct support-bot sentences (deterministic)."""
    out: list[str] = []
    for i in range(count):
        opener = _OPENERS[i % len(_OPENERS)]
        body = _BODIES[(i // len(_OPENERS)) % len(_BODIES)]
        out.append(f"{opener}, {body}.")
    return out


def zipf_sample(pool: list[str], n: int, *, s: float = 1.0, seed: int = 7) -> list[str]:
    """``n`` draws from ``pool`` with probability proportional to 1 / rank**s."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) ** s for rank in range(len(pool))]
    return rng.choices(pool, weights=weights, k=n)


def repeat_share(texts: list[str]) -> float:
    return 1.0 - len(set(texts)) / len(texts)
