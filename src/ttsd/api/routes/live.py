"""ttsd's own live protocol: ``WS /v1/live``.

The client sends JSON messages ``{"type": "speak"|"flush"|"end"|"cancel"|"close", "context":
"…", "text": "…"}``; a context opens with its first message, which may set how it speaks (``voice``,
``language``, ``format``, ``sample_rate``, ``speed``, ``seed``, ``lexicons``; the socket's query
string sets defaults for all). The server sends, per context, a ``sentence`` event before each
sentence's audio (its text, index and offset in samples), ``audio`` events (base64), ``flushed``,
``done`` (with the whole text's key), ``cancelled`` (nothing of the context follows it) and
``error`` events (the socket stays open unless the error is about the socket).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...errors import InvalidRequest, MalformedRequest
from ...live.events import (
    Audio,
    Cancel,
    Cancelled,
    CloseSocket,
    Command,
    ContextConfig,
    Done,
    End,
    Event,
    Failed,
    Flush,
    Flushed,
    SentenceStarted,
    Speak,
)
from ...ssml import is_ssml
from ..live_socket import serve
from ..models import LexiconNames, SampleRate

router = APIRouter(tags=["streaming"])

_CONFIG_FIELDS = ("voice", "language", "format", "sample_rate", "speed", "seed", "lexicons")


class LiveMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    type: Literal["speak", "flush", "end", "cancel", "close"] = "speak"
    context: str = Field("default", min_length=1, max_length=128)
    text: str | None = None
    # ssml: the text is a whole SSML document (unset: when it is one).
    text_type: Literal["text", "ssml"] | None = None
    api_key: str | None = None
    voice: str | None = None
    language: str | None = None
    format: str | None = None
    sample_rate: SampleRate
    speed: float | None = Field(None, ge=0.5, le=2.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    lexicons: LexiconNames

    def config(self, defaults: ContextConfig) -> ContextConfig | None:
        if not any(getattr(self, name) is not None for name in _CONFIG_FIELDS):
            return None
        return ContextConfig(
            voice=self.voice if self.voice is not None else defaults.voice,
            language=self.language if self.language is not None else defaults.language,
            format=self.format or defaults.format,
            sample_rate=self.sample_rate if self.sample_rate is not None else defaults.sample_rate,
            speed=self.speed if self.speed is not None else defaults.speed,
            seed=self.seed if self.seed is not None else defaults.seed,
            lexicons=tuple(self.lexicons) if self.lexicons else defaults.lexicons,
        )


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors()[:5])


class TtsdWire:
    def __init__(self, query: Mapping[str, str]) -> None:
        try:
            rate = int(query["sample_rate"]) if query.get("sample_rate") else None
            speed = float(query.get("speed") or 1.0)
        except ValueError as exc:
            raise InvalidRequest("sample_rate and speed in the query string are numbers") from exc
        self.defaults = ContextConfig(
            voice=query.get("voice"),
            language=query.get("language"),
            format=query.get("format") or "pcm",
            sample_rate=rate,
            speed=speed,
        )

    def _parse(self, message: Mapping[str, Any]) -> LiveMessage:
        try:
            return LiveMessage.model_validate(message)
        except ValidationError as exc:
            raise InvalidRequest(_problems(exc)) from exc

    def key(self, message: Mapping[str, Any]) -> Mapping[str, str]:
        key = message.get("api_key")
        return {"x-api-key": key} if isinstance(key, str) and key else {}

    def commands(self, message: Mapping[str, Any]) -> list[Command]:
        body = self._parse(message)
        match body.type:
            case "speak":
                if body.text is None and body.config(self.defaults) is None:
                    raise MalformedRequest("a speak message carries text (or opens a context)")
                text = body.text or ""
                ssml = body.text_type == "ssml" or (body.text_type is None and is_ssml(text))
                return [Speak(body.context, text, body.config(self.defaults), ssml=ssml)]
            case "flush":
                return [Flush(body.context)]
            case "end":
                return [End(body.context)]
            case "cancel":
                return [Cancel(body.context)]
        return [CloseSocket()]

    def render(self, event: Event) -> list[dict[str, Any]]:
        match event:
            case Audio():
                audio = base64.b64encode(event.data).decode()
                return [
                    {"type": "audio", "context": event.context, "sentence": event.sentence, "audio": audio}
                ]
            case SentenceStarted():
                return [
                    {
                        "type": "sentence",
                        "context": event.context,
                        "index": event.index,
                        "text": event.text,
                        "offset": event.offset,
                        "sample_rate": event.sample_rate,
                        "cached": event.cached,
                        **({"marks": list(event.marks)} if event.marks else {}),
                    }
                ]
            case Flushed():
                return [{"type": "flushed", "context": event.context}]
            case Done():
                return [
                    {
                        "type": "done",
                        "context": event.context,
                        "key": event.key,
                        "sentences": event.sentences,
                        "audio_seconds": event.audio_seconds,
                    }
                ]
            case Cancelled():
                return [{"type": "cancelled", "context": event.context}]
            case Failed():
                body: dict[str, Any] = {
                    "type": "error",
                    "context": event.context,
                    "error": event.error.to_dict(),
                }
                if event.sentence is not None:
                    body["sentence"] = event.sentence
                return [body]
        return []

    def closes_after(self, event: Event) -> bool:
        return False


@router.websocket("/v1/live")
async def live(ws: WebSocket) -> None:
    try:
        wire = TtsdWire(ws.query_params)
    except InvalidRequest as exc:
        await ws.accept()
        await ws.send_json({"type": "error", "context": None, "error": exc.to_dict()})
        await ws.close(code=1008)
        return
    await serve(ws, wire)
