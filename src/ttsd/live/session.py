"""A live session: one socket's contexts, its limits, and the one queue of what it sends.

Every context's events go through one outbox that a single writer drains onto the socket, so
frames never interleave and a slow client holds the contexts back (the outbox is bounded) rather
than growing memory. A cancel takes the context's events still in the outbox out before it
acknowledges, so nothing of that context reaches the client after the acknowledgement.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .. import audio
from ..audio_stream import STREAMABLE
from ..errors import InvalidRequest, RateLimited, TooManyContexts, TtsdError, UnknownContext, UnknownFormat
from ..prepare import SynthesisRequest
from ..service import TtsService
from ..state.memory import MemoryRateLimiter
from .context import LiveContext
from .events import (
    Cancel,
    Cancelled,
    CloseSocket,
    Closing,
    Command,
    ContextConfig,
    End,
    Event,
    Failed,
    Flush,
    Speak,
)
from .limits import LiveLimits

MAX_CONTEXT_ID = 128
log = logging.getLogger("ttsd.live")


class Outbox:
    """Events waiting for the socket, in order; bounded, so producers wait for a slow reader."""

    def __init__(self, limit: int) -> None:
        self._items: collections.deque[Event] = collections.deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    async def put(self, event: Event, *, urgent: bool = False) -> None:
        """``urgent`` (errors, acknowledgements) skips the queue's limit, not a hard one: a client
        that sends bad messages and reads nothing is held back too."""
        while len(self._items) >= (4 * self._limit if urgent else self._limit):
            self._room.clear()
            await self._room.wait()
        self._items.append(event)
        self._ready.set()

    async def get(self) -> Event:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        event = self._items.popleft()
        if len(self._items) < self._limit:
            self._room.set()
        return event

    def drop(self, context: str) -> None:
        self._items = collections.deque(e for e in self._items if getattr(e, "context", None) != context)
        self._room.set()


class LiveSession:
    def __init__(
        self,
        service: TtsService,
        limits: LiveLimits,
        *,
        identity: str,
        scope: str,
        admit: Callable[[], Awaitable[None]],
        messages: MemoryRateLimiter,
        defaults: ContextConfig,
    ) -> None:
        self._service = service
        self._limits = limits
        self._identity = identity
        self._scope = scope
        self._admit = admit
        self._messages = messages
        self._defaults = defaults
        self.outbox = Outbox(limits.outbox)
        self._contexts: dict[str, LiveContext] = {}

    @property
    def speaking(self) -> bool:
        """A context has something to say now (a socket that waits for text is idle)."""
        return any(c.busy for c in self._contexts.values())

    async def handle(self, command: Command) -> None:
        """Carry out one command; its problems become error events (fatal ones close the socket)."""
        try:
            await self._take_token()
            await self._carry_out(command)
        except TtsdError as exc:
            await self.outbox.put(
                Failed(command.context, exc, fatal=isinstance(exc, TooManyContexts)), urgent=True
            )
            return
        except Exception:  # a fault boundary: one message must not take the socket down
            log.exception("live command failed", extra={"command": type(command).__name__})
            await self.outbox.put(Failed(command.context, TtsdError("this message failed")), urgent=True)
            return
        if isinstance(command, CloseSocket):
            await self.outbox.put(Closing(1000))

    async def fail(self, context: str | None, error: TtsdError) -> None:
        """A message that could not even be read: said on the socket, which stays open."""
        await self.outbox.put(Failed(context, error), urgent=True)

    async def _take_token(self) -> None:
        rate = self._limits.messages_per_second
        decision = await self._messages.take(f"live:{self._identity}", rate, max(1, int(2 * rate)))
        if not decision.allowed:
            raise RateLimited(
                f"at most {rate:g} live messages a second per key; this one was dropped",
                retry_after=decision.retry_after,
                limit=rate,
            )

    async def _carry_out(self, command: Command) -> None:
        match command:
            case Speak(context=context_id, text=text, config=config, phrase=phrase, ssml=ssml):
                context = self._contexts.get(context_id) or await self._open(context_id, config)
                if text:
                    context.speak(text, phrase=phrase, ssml=ssml)
            case Flush(context=context_id):
                self._context(context_id).flush()
            case End(context=context_id, flushed_only=flushed_only):
                self._context(context_id).end(flushed_only=flushed_only)
            case Cancel(context=context_id):
                context = self._context(context_id)
                await context.cancel()
                self.outbox.drop(context_id)
                await self.outbox.put(Cancelled(context_id), urgent=True)
            case CloseSocket():
                await self.end_all()

    def _context(self, context_id: str) -> LiveContext:
        context = self._contexts.get(context_id)
        if context is None:
            raise UnknownContext(f"no open context {context_id!r}", details={"open": sorted(self._contexts)})
        return context

    async def _open(self, context_id: str, config: ContextConfig | None) -> LiveContext:
        if not context_id or len(context_id) > MAX_CONTEXT_ID or not context_id.isprintable():
            raise InvalidRequest(f"a context id is 1 to {MAX_CONTEXT_ID} printable characters")
        if len(self._contexts) >= self._limits.contexts:
            raise TooManyContexts(
                f"at most {self._limits.contexts} contexts may be open on one socket",
                details={"limit": self._limits.contexts},
            )
        await self._admit()  # a context is one request to the rate limit, however many sentences
        config = config or self._defaults
        named = config.voice is not None or config.language is not None
        voice = self._service.catalogue.resolve(config.voice, config.language)
        template = SynthesisRequest(
            text="",
            voice=voice.name if named else None,
            format="pcm",
            speed=config.speed,
            seed=config.seed,
            lexicons=config.lexicons,
            scope=self._scope,
        )
        output = audio.format_at(config.format, config.sample_rate)
        if output.name not in STREAMABLE:
            raise UnknownFormat(
                f"{output.name} records its length before its audio, so it cannot be streamed live",
                details={"valid": sorted(STREAMABLE)},
            )
        context = LiveContext(
            self._service, context_id, template, output, self._limits, self.outbox.put, self._closed
        )
        self._contexts[context_id] = context
        return context

    def _closed(self, context_id: str) -> None:
        self._contexts.pop(context_id, None)

    async def end_all(self) -> None:
        """Every context ends as ElevenLabs' close_socket has it: what was flushed is spoken."""
        contexts = list(self._contexts.values())
        for context in contexts:
            context.end(flushed_only=True)
        await asyncio.gather(*(c.finished() for c in contexts))

    async def close(self) -> None:
        """The socket is gone: every context is cancelled (barge-in for all of them)."""
        for context in list(self._contexts.values()):
            with contextlib.suppress(Exception):
                await context.cancel()
