"""What the live-input tests (``test_live*``) share: a support reply, a socket to ``/v1/live``, its
messages sent and events read, and a reply cut into tokens as an LLM writes it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from websockets.sync.client import ClientConnection, connect

from .servers import Server

REPLY = (
    "Thanks for calling, your order has shipped. It should arrive on Friday. "
    "Is there anything else I can help you with?"
)


@contextmanager
def live(server: Server, query: str = "", **kwargs: Any) -> Iterator[ClientConnection]:
    url = server.url.replace("http://", "ws://") + "/v1/live" + query
    with connect(url, open_timeout=30, max_size=None, **kwargs) as ws:
        yield ws


def send(ws: ClientConnection, **message: Any) -> None:
    ws.send(json.dumps(message))


def read_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool], timeout: float = 90
) -> list[dict[str, Any]]:
    """Events until one for which ``done`` is true (included)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no closing event in {timeout} s; got {[e['type'] for e in events]}"
        event = json.loads(ws.recv(timeout=left))
        events.append(event)
        if done(event):
            return events


def of(events: list[dict[str, Any]], kind: str, context: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind and (context is None or e["context"] == context)]


def pcm(events: list[dict[str, Any]], context: str | None = None) -> np.ndarray:
    data = b"".join(base64.b64decode(e["audio"]) for e in of(events, "audio", context))
    return np.frombuffer(data, dtype="<i2")


def tokens(text: str) -> list[str]:
    """Roughly as an LLM writes: words with their spaces, punctuation on its own."""
    out: list[str] = []
    for word in text.split(" "):
        if word[-1:] in ".,?!":
            out += [word[:-1], word[-1] + " "]
        else:
            out.append(word + " ")
    return out
