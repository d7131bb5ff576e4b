"""What the streaming tests ask of a server: a support paragraph, a streamed OpenAI speech request,
and the same text's stored file."""

from __future__ import annotations

from typing import Any

import httpx

from .servers import Server

PARAGRAPH = (
    "Thanks for holding. Your call matters to us. An agent will be with you shortly. "
    "Meanwhile, you can check your order status online. Most questions are answered there. "
    "Thank you for your patience."
)


def speech(server: Server, text: str, fmt: str, voice: str = "en-joe", **extra: Any) -> httpx.Response:
    body = {"model": "tts-1", "input": text, "voice": voice, "response_format": fmt, **extra}
    return httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=120)


def stored(server: Server, text: str, fmt: str, voice: str = "en-joe") -> bytes:
    """The same request's stored file. The stream's job stores it (the stream ends with the last
    sentence, the job a moment later, once encoded), so this joins that job rather than making another."""
    response = httpx.post(f"{server.url}/v1/synthesize", json={"text": text, "format": fmt, "voice": voice})
    body = response.json()
    if response.status_code == 202:
        assert body["merged"], body
        body = server.wait_task(body["task_id"])
    return httpx.get(body["url"], follow_redirects=True).content
