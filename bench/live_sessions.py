"""Bots talking to ttsd, for ``bench live``: a simulated LLM that writes a reply token by token,
and the two ways a bot turns it into speech.

- ``live_session``: ttsd's live socket (``/v1/live``): tokens go in as they are written, audio comes
  out sentence by sentence, the first one early.
- ``today_session``: what bots do with OpenAI-compatible servers today (Pipecat's and LiveKit's
  adapters): a client-side splitter collects each complete sentence and sends it to
  ``/v1/audio/speech`` as its own request, one after another, streaming each response.

Both play what they receive in real time from its first byte and report when the audio ran dry
(a gap the caller hears) before the reply was over.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass, field

import httpx
import websockets

from ttsd.text import SentenceSplitter

TOKENS_PER_SECOND = 30.0
# A gap shorter than this is not heard as one (a player's own buffer covers it).
TOLERANCE = 0.05
RATE = 22050  # Piper's, and the pcm both ways of speaking are asked for
_TOKEN = re.compile(r"\s?[A-Za-z]{1,5}|\s?\d{1,3}|\s?[^\sA-Za-z\d]|\s+")


def tokens(text: str) -> list[str]:
    """About as an LLM's tokenizer cuts English: a space goes with the word after it, long words
    are several tokens, punctuation is its own."""
    return _TOKEN.findall(text)


@dataclass
class Playback:
    """Audio received, played in real time from its first byte."""

    first: float | None = None
    seconds: float = 0.0  # of audio received
    dry: float = 0.0  # longest gap heard
    chunks: int = 0

    def add(self, samples: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        else:
            self.dry = max(self.dry, (now - self.first) - self.seconds)
        self.seconds += samples / RATE
        self.chunks += 1

    @property
    def ran_dry(self) -> bool:
        return self.dry > TOLERANCE


@dataclass
class Turn:
    """One reply spoken: when its first sentence was complete (by the splitter's rules, as the
    tokens arrived) and when its first audio came."""

    started: float = 0.0
    first_complete: float | None = None
    playback: Playback = field(default_factory=Playback)
    error: str | None = None

    @property
    def first_audio(self) -> float | None:
        """From the first sentence being complete to its first audio byte, in seconds."""
        if self.first_complete is None or self.playback.first is None:
            return None
        return self.playback.first - self.first_complete


async def write(text: str, send: object, turn: Turn, *, burst: bool = False) -> None:
    """Token by token at the LLM's pace (all at once for ``burst``); notes when the first
    sentence is complete."""
    splitter = SentenceSplitter(first_clause=20)
    for token in tokens(text):
        await send(token)  # type: ignore[operator]
        if turn.first_complete is None and splitter.feed(token):
            turn.first_complete = time.perf_counter()
        if not burst:
            await asyncio.sleep(1 / TOKENS_PER_SECOND)
    if turn.first_complete is None:
        turn.first_complete = time.perf_counter()  # a one-sentence reply: complete at its end


async def live_session(url: str, text: str, *, voice: str = "en-joe", burst: bool = False) -> Turn:
    turn = Turn(started=time.perf_counter())
    ws_url = url.replace("http://", "ws://") + f"/v1/live?voice={voice}&format=pcm"
    async with websockets.connect(ws_url, max_size=None) as ws:

        async def send(token: str) -> None:
            await ws.send(json.dumps({"type": "speak", "context": "t", "text": token}))

        async def reply() -> None:
            await write(text, send, turn, burst=burst)
            await ws.send(json.dumps({"type": "end", "context": "t"}))

        writing = asyncio.create_task(reply())
        async for message in ws:
            event = json.loads(message)
            if event["type"] == "audio":
                turn.playback.add(len(base64.b64decode(event["audio"])) // 2)
            elif event["type"] == "error":
                turn.error = event["error"]["code"]
            elif event["type"] == "done":
                break
        await writing
    return turn


async def today_session(url: str, text: str, *, voice: str = "en-joe", burst: bool = False) -> Turn:
    turn = Turn(started=time.perf_counter())
    sentences: asyncio.Queue[str | None] = asyncio.Queue()
    splitter = SentenceSplitter(first_clause=20)

    async def send(token: str) -> None:
        for sentence in splitter.feed(token):
            sentences.put_nowait(sentence)

    async def reply() -> None:
        await write(text, send, turn, burst=burst)
        for sentence in splitter.flush():
            sentences.put_nowait(sentence)
        sentences.put_nowait(None)

    writing = asyncio.create_task(reply())
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while (sentence := await sentences.get()) is not None:
            body = {"model": "tts-1", "input": sentence, "voice": voice, "response_format": "pcm"}
            async with client.stream("POST", "/v1/audio/speech", json=body) as response:
                if response.status_code != 200:
                    turn.error = str(response.status_code)
                    continue
                carry = b""
                async for chunk in response.aiter_bytes():
                    data = carry + chunk
                    carry = data[len(data) // 2 * 2 :]
                    turn.playback.add(len(data) // 2)
    await writing
    return turn


async def barge_in(url: str, text: str, next_text: str, *, voice: str = "en-joe") -> dict[str, float]:
    """A long reply, interrupted at its first audio; a new turn right after. Returns the seconds
    from the cancel to its acknowledgement and to the last audio of the old turn, and to the new
    turn's first audio."""
    ws_url = url.replace("http://", "ws://") + f"/v1/live?voice={voice}&format=pcm"
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "speak", "context": "old", "text": text}))
        await ws.send(json.dumps({"type": "end", "context": "old"}))
        while json.loads(await ws.recv())["type"] != "audio":
            pass
        cancelled = time.perf_counter()
        await ws.send(json.dumps({"type": "cancel", "context": "old"}))
        await ws.send(json.dumps({"type": "speak", "context": "new", "text": next_text}))
        await ws.send(json.dumps({"type": "end", "context": "new"}))
        last_old = acknowledged = new_audio = None
        late_old = 0
        while new_audio is None or acknowledged is None:
            event = json.loads(await ws.recv())
            now = time.perf_counter()
            if event.get("context") == "old" and event["type"] in ("audio", "sentence"):
                if acknowledged is not None:
                    late_old += 1
                last_old = now
            elif event["type"] == "cancelled":
                acknowledged = now
            elif event["type"] == "audio" and event["context"] == "new" and new_audio is None:
                new_audio = now
        return {
            "ack": acknowledged - cancelled,
            "last_old": (last_old - cancelled) if last_old else 0.0,
            "new_first_audio": new_audio - cancelled,
            "late_old_events": float(late_old),
        }
