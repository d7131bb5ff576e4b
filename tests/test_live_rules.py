"""Live input (``WS /v1/live``): socket rules (keys, limits, an idle socket) on a server of its own;
formats at a chosen rate, a context's language from its script, and SSML in a context."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from .conftest import unique
from .live_calls import live, of, pcm, read_until, send
from .servers import Server, start_server, stop_server


def test_socket_rules_keys_limits_and_idle(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        env={
            "TTSD_API_KEYS": "acme:sekrit",
            "TTSD_LIVE_MAX_CONTEXTS": "2",
            "TTSD_LIVE_IDLE_TIMEOUT": "1.5",
            "TTSD_LIVE_IDLE_FLUSH": "0.3",
            "TTSD_LIVE_MESSAGE_RATE": "5",
            "TTSD_ENGINES": "espeak",
            "TTSD_DEFAULT_VOICE": "en-us-female",
        },
    )
    try:
        # No key: an error event, then the socket closes (policy violation).
        with live(server) as ws:
            send(ws, type="speak", text="Hello.")
            assert read_until(ws, lambda e: True)[0]["error"]["code"] == "unauthorized"
            with pytest.raises(Exception, match="1008"):
                ws.recv(timeout=5)
        # The key as a header, in the query, or in the first message.
        for how in ({"additional_headers": {"X-API-Key": "sekrit"}}, {"query": "?api_key=sekrit"}, {}):
            query = how.pop("query", "")
            with live(server, query, **how) as ws:
                send(ws, type="speak", context="a", text="Hello there", api_key="sekrit")
                # A fragment with no ending is spoken after the idle flush.
                events = read_until(ws, lambda e: e["type"] in ("audio", "error"))
                assert events[-1]["type"] == "audio", events
        # Too many contexts: about the socket, so it closes.
        with live(server, "?api_key=sekrit") as ws:
            for name in ("a", "b", "c"):
                send(ws, type="speak", context=name, text="One")
            error = read_until(ws, lambda e: e["type"] == "error")[-1]
            assert error["error"]["code"] == "too_many_contexts"
            with pytest.raises(Exception, match="1008"):
                while True:
                    ws.recv(timeout=5)
        # Messages past the rate are refused, one error each, the socket stays open.
        with live(server, "?api_key=sekrit") as ws:
            for _ in range(20):
                send(ws, type="speak", context="a", text="x")
            errors = read_until(ws, lambda e: e.get("error", {}).get("code") == "rate_limited")
            assert errors[-1]["error"]["code"] == "rate_limited"
        # An idle socket with nothing to speak is closed.
        with live(server, "?api_key=sekrit") as ws:
            event = read_until(ws, lambda e: True, timeout=10)[0]
            assert event["error"]["code"] == "idle_timeout"
        # The key never reaches a log line.
        assert "sekrit" not in server.log()
    finally:
        stop_server(server)


def test_formats_at_a_chosen_rate_over_http(server: Server) -> None:
    text = unique("A rate of our choosing.")
    with server.client() as client:
        native = client.post(
            "/v1/audio/speech", json={"input": text, "voice": "echo", "response_format": "pcm"}
        )
        for rate in (8000, 16000, 48000):
            answer = client.post(
                "/v1/audio/speech",
                json={"input": text, "voice": "echo", "response_format": "pcm", "sample_rate": rate},
            )
            assert answer.status_code == 200 and answer.headers["x-sample-rate"] == str(rate)
            assert abs(len(answer.content) / 2 / rate - len(native.content) / 2 / 22050) < 0.01
        bad = client.post("/v1/synthesize", json={"text": text, "format": "pcm", "sample_rate": 12345})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_format"
        bad = client.post("/v1/synthesize", json={"text": text, "format": "ulaw", "sample_rate": 16000})
        assert bad.status_code == 422
        done = client.post("/v1/synthesize", json={"text": text, "voice": "echo", "format": "ulaw"})
        body = done.json()
        if done.status_code == 202:
            body = server.wait_task(body["task_id"])
        audio = httpx.get(body["url"], follow_redirects=True)
        assert audio.headers["content-type"].startswith("audio/basic")
        assert abs(len(audio.content) / 8000 - len(native.content) / 2 / 22050) < 0.01


def test_a_context_that_names_no_voice_speaks_in_its_scripts_language(server: Server) -> None:
    """As on every route: a Mandarin reply is not read by the English default; the whole text is
    kept under the key the same request over HTTP has."""
    text = unique("您好，这里是客服中心。请问有什么可以帮您？")
    with live(server) as ws:
        send(ws, type="speak", context="zh", text=text)
        send(ws, type="end", context="zh")
        events = read_until(ws, lambda e: e["type"] in ("done", "error"))
    assert events[-1]["type"] == "done", events
    with server.client() as client:
        answer = client.post("/v1/synthesize", json={"text": text, "format": "pcm"})
    assert answer.json()["key"] == events[-1]["key"]
    assert answer.status_code == 200 and answer.json()["cached"] is True


def test_an_ssml_document_in_a_live_context(server: Server) -> None:
    """Each message a whole document: its sentences with their breaks, rates and marks."""
    reference = unique("Hello.")
    document = (
        f'<speak>{reference}<break time="1s"/><mark name="order"/>Your order '
        '<say-as interpret-as="digits">4521</say-as> has shipped.</speak>'
    )
    with live(server, "?voice=en-joe&format=pcm") as ws:
        send(ws, type="speak", context="doc", text=document)
        send(ws, type="end", context="doc")
        events = read_until(ws, lambda e: e["type"] in ("done", "error"))
    assert events[-1]["type"] == "done", events
    sentences = of(events, "sentence")
    assert [s["text"] for s in sentences][-1] == "Your order four, five, two, one has shipped."
    marked = sentences[-1]
    assert marked["marks"] == ["order"]
    samples = pcm(events)
    # The second sentence starts after its one-second break: silence right before its offset.
    assert np.abs(samples[marked["offset"] - 22050 + 300 : marked["offset"] - 10]).max() == 0
