"""ElevenLabs' live text input, so voice-bot frameworks that speak it (the ``elevenlabs`` SDK,
LiveKit Agents, Pipecat) work unmodified against ttsd's URL:
``WS /v1/text-to-speech/{voice_id}/stream-input`` (one context) and ``…/multi-stream-input``.

``voice_id`` is a ttsd voice (or an OpenAI alias); ``output_format`` takes ElevenLabs' names
(``pcm_8000``…``pcm_48000``, ``ulaw_8000``, ``alaw_8000``, ``mp3_22050_32``…, the bitrate is not
honoured); ``xi-api-key`` (a header, or ``xi_api_key`` in the first message) is a ttsd API key.
``voice_settings.speed`` sets the pace; other voice settings, ``model_id``,
``generation_config`` and ``try_trigger_generation`` are accepted and have no effect (ttsd
speaks each sentence the moment it is complete; with ``auto_mode=true`` each message is taken as a
whole phrase, as ElevenLabs does). ``close_context`` is the barge-in: what was
flushed before it is still spoken, then ``isFinal``; the rest of the context is cancelled. Audio
messages carry ``alignment`` with what ttsd truthfully knows, each sentence's span (the sentence
as one entry), never invented per-character times.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket

from ... import audio
from ...errors import InvalidRequest, MalformedRequest, TtsdError
from ...live.events import Audio, CloseSocket, Command, ContextConfig, Done, End, Event, Failed, Flush, Speak
from ...ssml import is_ssml
from ..live_socket import serve

router = APIRouter(tags=["elevenlabs"])

_DEFAULT_FORMAT = "mp3_44100_128"  # ElevenLabs' own default
_SINGLE = "0"


def output_format(name: str) -> str:
    """ElevenLabs' output_format as a ttsd format: mp3_44100_128 -> mp3_44100, opus_48000_64 -> opus."""
    base, _, rest = name.partition("_")
    rate = rest.partition("_")[0]
    candidate = {"opus": "opus", "ulaw": "ulaw", "alaw": "alaw"}.get(base) or f"{base}_{rate}"
    try:
        return audio.get_format(candidate).name
    except TtsdError as exc:
        raise InvalidRequest(
            f"output_format {name!r} is not offered; use pcm_8000…pcm_48000, ulaw_8000, alaw_8000, "
            "mp3_22050_32… or opus_48000_64"
        ) from exc


def _field(message: Mapping[str, Any], name: str, kind: type) -> Any:
    value = message.get(name)
    if value is not None and not isinstance(value, kind):
        raise MalformedRequest(f"{name} must be a {kind.__name__}")
    return value


class ElevenLabsWire:
    def __init__(self, voice_id: str, query: Mapping[str, str], *, multi: bool) -> None:
        self.multi = multi
        # auto_mode: each message is a whole sentence or phrase, spoken as it comes (what LiveKit
        # and Pipecat send by default, sentences without a trailing space).
        self.phrases = query.get("auto_mode", "").lower() == "true"
        # enable_ssml_parsing: a message that is a whole <speak> document is read as SSML.
        self.ssml = query.get("enable_ssml_parsing", "").lower() == "true"
        self.defaults = ContextConfig(
            voice=voice_id, format=output_format(query.get("output_format") or _DEFAULT_FORMAT)
        )

    def key(self, message: Mapping[str, Any]) -> Mapping[str, str]:
        headers = {}
        if isinstance(key := message.get("xi_api_key"), str) and key:
            headers["xi-api-key"] = key
        if isinstance(token := message.get("authorization"), str) and token:
            headers["authorization"] = token
        return headers

    def _config(self, message: Mapping[str, Any]) -> ContextConfig | None:
        settings = _field(message, "voice_settings", dict)
        speed = settings.get("speed") if settings else None
        if speed is None:
            return None
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.5 <= speed <= 2.0:
            raise InvalidRequest("voice_settings.speed must be a number from 0.5 to 2.0")
        return ContextConfig(voice=self.defaults.voice, format=self.defaults.format, speed=float(speed))

    def commands(self, message: Mapping[str, Any]) -> list[Command]:
        text = _field(message, "text", str)
        context = _field(message, "context_id", str) or (_SINGLE if not self.multi else "default")
        out: list[Command] = []
        if self.multi and message.get("close_socket") is True:
            return [CloseSocket()]
        if text:
            ssml = self.ssml and is_ssml(text)
            out.append(Speak(context, text, self._config(message), phrase=self.phrases, ssml=ssml))
        elif text == "" and not self.multi:
            out.append(End(context))  # stream-input: an empty text ends the input
        # multi-stream-input: an empty text keeps the connection (or the context) alive
        if message.get("flush") is True:
            out.append(Flush(context))
        if self.multi and message.get("close_context") is True:
            out.append(End(context, flushed_only=True))
        return out

    def _context(self, context: str | None) -> dict[str, Any]:
        return {"contextId": context, "context_id": context} if self.multi and context else {}

    def render(self, event: Event) -> list[dict[str, Any]]:
        match event:
            case Audio():
                body: dict[str, Any] = {"audio": base64.b64encode(event.data).decode(), "isFinal": False}
                if event.span is not None:
                    start, seconds = event.span
                    alignment = {
                        "chars": [event.text],
                        "charStartTimesMs": [round(start * 1000)],
                        "charDurationsMs": [round(seconds * 1000)],
                    }
                    body["alignment"] = body["normalizedAlignment"] = alignment
                return [{**body, **self._context(event.context)}]
            case Done():
                return [{"isFinal": True, **self._context(event.context)}]
            case Failed():
                return [
                    {
                        "error": event.error.code,
                        "message": event.error.message,
                        **self._context(event.context),
                    }
                ]
        return []

    def closes_after(self, event: Event) -> bool:
        return not self.multi and isinstance(event, Done)


async def _serve(ws: WebSocket, voice_id: str, *, multi: bool) -> None:
    try:
        ws.app.state.service.catalogue.resolve(voice_id, None)
        wire = ElevenLabsWire(voice_id, ws.query_params, multi=multi)
    except InvalidRequest as exc:
        await ws.accept()
        await ws.send_json({"error": exc.code, "message": exc.message})
        await ws.close(code=1008)
        return
    await serve(ws, wire)


@router.websocket("/v1/text-to-speech/{voice_id}/stream-input")
async def stream_input(ws: WebSocket, voice_id: str) -> None:
    await _serve(ws, voice_id, multi=False)


@router.websocket("/v1/text-to-speech/{voice_id}/multi-stream-input")
async def multi_stream_input(ws: WebSocket, voice_id: str) -> None:
    await _serve(ws, voice_id, multi=True)
