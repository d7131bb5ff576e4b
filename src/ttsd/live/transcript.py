"""What a live context is told, as it arrives: deltas made safe to buffer, bounded, cut into
sentences by the one splitter, and kept whole for the text's own key at the end."""

from __future__ import annotations

from ..errors import TextTooLong
from ..text import SentenceSplitter, clean
from .limits import LiveLimits


class Transcript:
    def __init__(self, context_id: str, limits: LiveLimits) -> None:
        self._id = context_id
        self._limits = limits
        self._splitter = SentenceSplitter(first_clause=limits.first_clause)
        self._parts: list[str] = []
        self._chars = 0

    @property
    def pending(self) -> str:
        """Buffered, not yet a sentence."""
        return self._splitter.pending

    @property
    def whole(self) -> str:
        return "".join(self._parts)

    def add(self, text: str, *, phrase: bool) -> list[str]:
        """The sentences a delta completes. ``phrase``: it is whole, said now, and it ends at a
        word boundary even when the next one starts without a space."""
        delta = clean(text)
        if phrase and self._parts and not self._parts[-1][-1:].isspace() and not delta[:1].isspace():
            delta = " " + delta
        limits = self._limits
        if self._chars + len(delta) > limits.max_text_chars:
            raise TextTooLong(
                f"context {self._id!r} would pass {limits.max_text_chars} characters; end it, open another",
                details={"limit": limits.max_text_chars},
            )
        if len(self.pending) + len(delta) > limits.buffer_chars:
            raise TextTooLong(
                f"context {self._id!r} would buffer over {limits.buffer_chars} characters without a "
                "sentence end; flush it",
                details={"limit": limits.buffer_chars},
            )
        self._chars += len(delta)
        self._parts.append(delta)
        return self._splitter.feed(delta) + (self._splitter.flush() if phrase else [])

    def flush(self) -> list[str]:
        return self._splitter.flush()
