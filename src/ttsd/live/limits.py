"""The bounds of live sessions, from the settings (TTSD_LIVE_*)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings


@dataclass(frozen=True)
class LiveLimits:
    contexts: int  # open at once per socket
    buffer_chars: int  # buffered without a sentence end, per context
    max_text_chars: int  # in all, per context
    idle_flush: float  # seconds without text before a fragment is spoken
    idle_timeout: float  # seconds a socket may stay silent with nothing to speak
    messages_per_second: float  # per API key (per address without keys), in this process
    first_clause: int | None  # weight at which a first sentence may be cut at a clause
    lookahead: int  # sentences of a context opened ahead of the one playing
    outbox: int  # events queued for a slow client before the contexts wait

    @classmethod
    def of(cls, settings: Settings) -> LiveLimits:
        return cls(
            contexts=settings.live_max_contexts,
            buffer_chars=settings.live_buffer_chars,
            max_text_chars=settings.max_text_chars,
            idle_flush=settings.live_idle_flush,
            idle_timeout=settings.live_idle_timeout,
            messages_per_second=settings.live_message_rate,
            first_clause=settings.live_first_clause or None,
            lookahead=settings.live_lookahead,
            outbox=256,
        )
