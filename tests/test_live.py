"""Live input (``WS /v1/live``): a reply spoken while it is written, contexts, flush, end, cancel
(barge-in) and bad messages, in both modes on the shared servers. Socket rules, formats, languages
and SSML: ``test_live_rules``."""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np
import pytest

from .conftest import unique
from .live_calls import REPLY, live, of, pcm, read_until, send, tokens
from .servers import Server


def test_a_reply_written_token_by_token_is_spoken_sentence_by_sentence(server: Server) -> None:
    text = unique(REPLY)
    with live(server, "?voice=en-joe&format=pcm") as ws:
        for token in tokens(text):
            send(ws, type="speak", context="turn", text=token)
        send(ws, type="end", context="turn")
        events = read_until(ws, lambda e: e["type"] in ("done", "error"))
    assert not of(events, "error"), events
    sentences = of(events, "sentence")
    assert [s["text"] for s in sentences] == [
        "Thanks for calling, your order has shipped.",
        "It should arrive on Friday.",
        "Is there anything else I can help you with?",
        text.rsplit("? ", 1)[1],
    ]
    assert [s["index"] for s in sentences] == [0, 1, 2, 3]
    offsets = [s["offset"] for s in sentences]
    assert offsets[0] == 0 and offsets == sorted(offsets) and len(set(offsets)) == 4
    # Each sentence's event comes before its audio, and the offsets are where its audio starts.
    samples = pcm(events)
    done = events[-1]
    assert done["type"] == "done" and done["sentences"] == 4
    assert abs(len(samples) / 22050 - done["audio_seconds"]) < 0.01
    assert np.abs(samples[offsets[1] - 2000 : offsets[1] - 100]).max() == 0  # the pause before it
    # The whole text is stored under its own key: the same request over HTTP is a hit.
    with server.client() as client:
        answer = client.post("/v1/synthesize", json={"text": text, "voice": "en-joe", "format": "pcm"})
    assert answer.status_code == 200 and answer.json()["cached"] is True
    assert answer.json()["key"] == done["key"]
    with server.client() as client:
        stored = client.get(answer.json()["url"], follow_redirects=True).content
    assert np.array_equal(np.frombuffer(stored, dtype="<i2"), samples)


def test_phone_audio_from_a_live_context(server: Server) -> None:
    text = unique("Your card ending 4321 is active. Goodbye.")
    with live(server) as ws:
        send(ws, type="speak", context="call", text=text, voice="en-joe", format="ulaw")
        send(ws, type="end", context="call")
        events = read_until(ws, lambda e: e["type"] in ("done", "error"))
    assert events[-1]["type"] == "done", events
    assert {s["sample_rate"] for s in of(events, "sentence")} == {8000}
    ulaw = b"".join(base64.b64decode(e["audio"]) for e in of(events, "audio"))
    # One byte a sample at 8 kHz: the seconds the done event reports.
    assert abs(len(ulaw) / 8000 - events[-1]["audio_seconds"]) < 0.02


def test_contexts_run_side_by_side_and_a_cached_sentence_comes_at_once(server: Server) -> None:
    cached = unique("This sentence was said before.")
    with server.client() as client:
        client.post("/v1/synthesize", json={"text": cached, "voice": "en-joe", "format": "pcm"})
        server.wait_idle()
    with live(server, "?voice=en-joe") as ws:
        for n in range(3):
            send(ws, type="speak", context=f"c{n}", text=unique(f"Context {n} speaks now. "))
        for n in range(3):
            send(ws, type="end", context=f"c{n}")
        events: list[dict[str, Any]] = []
        while len(of(events, "done")) < 3:
            events += read_until(ws, lambda e: e["type"] in ("done", "error"))
        assert not of(events, "error") and {e["context"] for e in of(events, "done")} == {"c0", "c1", "c2"}
        for n in range(3):  # each context's audio came in its own order
            indices = [e["sentence"] for e in of(events, "audio", f"c{n}")]
            assert indices == sorted(indices) and indices
        send(ws, type="speak", context="again", text=cached + " ")
        first = read_until(ws, lambda e: e["type"] == "sentence")[-1]
        assert first["cached"] is True and first["text"] == "This sentence was said before."
        send(ws, type="cancel", context="again")
        read_until(ws, lambda e: e["type"] == "cancelled")


def test_flush_speaks_a_fragment_and_says_so(server: Server) -> None:
    with live(server, "?voice=en-joe") as ws:
        fragment = f"no full stop yet {time.time_ns()} and more"
        send(ws, type="speak", context="f", text=fragment)
        send(ws, type="flush", context="f")
        events = read_until(ws, lambda e: e["type"] == "flushed")
        assert [s["text"] for s in of(events, "sentence")] == [fragment] and len(pcm(events)) > 0
        assert events[-2]["type"] == "audio"  # flushed once its audio is out
        send(ws, type="cancel", context="f")
        read_until(ws, lambda e: e["type"] == "cancelled")


@pytest.mark.slow
@pytest.mark.parametrize("server", ["embedded"], indirect=True)
def test_cancel_stops_the_context_and_frees_the_slot(server: Server) -> None:
    """Barge-in: nothing of the context after the acknowledgement; its queued sentences are never
    made; the next context's first sentence is not kept waiting behind them."""
    server.wait_idle()
    made_before = server.metric("ttsd_syntheses_total")
    cancelled_before = server.metric("ttsd_job_failures_total", code="cancelled")
    long_reply = " ".join(unique(f"This is sentence {n} of a reply that goes on and on.") for n in range(10))
    with live(server, "?voice=en-joe") as ws:
        send(ws, type="speak", context="long", text=long_reply)
        send(ws, type="end", context="long")
        read_until(ws, lambda e: e["type"] == "audio")
        send(ws, type="cancel", context="long")
        after = read_until(ws, lambda e: e["type"] == "cancelled")
        assert after[-1]["context"] == "long"
        started = time.monotonic()
        send(ws, type="speak", context="next", text=unique("A new turn right away.") + " ")
        events = read_until(ws, lambda e: e["type"] == "audio")
        waited = time.monotonic() - started
        assert not of(events, "audio", "long") and not of(events, "sentence", "long")
        send(ws, type="end", context="next")
        read_until(ws, lambda e: e["type"] == "done")
    # Ten sentences were asked for, two ahead of the one playing: the first two at most were made
    # (and the new turn's one); what was under way was cancelled, the rest never began.
    server.wait_idle()
    made = server.metric("ttsd_syntheses_total") - made_before
    assert 2 <= made <= 3, made
    assert server.metric("ttsd_job_failures_total", code="cancelled") - cancelled_before <= 2
    assert waited < 30  # a sanity bound: the bench measures this time


def test_bad_messages_are_error_events_and_the_socket_stays_open(server: Server) -> None:
    with live(server, "?voice=en-joe") as ws:
        ws.send("{not json")
        assert read_until(ws, lambda e: True)[0]["error"]["code"] == "malformed_request"
        ws.send(b"\x00\x01")
        assert read_until(ws, lambda e: True)[0]["error"]["code"] == "malformed_request"
        send(ws, type="shout", text="hi")
        assert read_until(ws, lambda e: True)[0]["error"]["code"] == "invalid_request"
        send(ws, type="flush", context="nobody")
        error = read_until(ws, lambda e: True)[0]
        assert error["error"]["code"] == "unknown_context" and error["context"] == "nobody"
        send(ws, type="speak", context="v", text="Hi.", voice="no-such-voice")
        assert read_until(ws, lambda e: True)[0]["error"]["code"] == "unknown_voice"
        send(ws, type="speak", context="fmt", text="Hi.", format="aiff")
        assert read_until(ws, lambda e: True)[0]["error"]["code"] == "unknown_format"
        send(ws, type="speak", context="rate", text="Hi.", format="ulaw", sample_rate=16000)
        assert read_until(ws, lambda e: True)[0]["error"]["code"] == "unknown_format"
        send(ws, type="speak", context="long", text="word " * 500)  # 2,500 characters, no sentence end
        error = read_until(ws, lambda e: e["type"] == "error")[-1]
        assert error["error"]["code"] == "text_too_long" and error["context"] == "long"
        send(ws, type="cancel", context="long")
        read_until(ws, lambda e: e["type"] == "cancelled")
        # Still open, still speaking.
        send(ws, type="speak", context="ok", text=unique("Still here.") + " ")
        send(ws, type="end", context="ok")
        assert read_until(ws, lambda e: e["type"] in ("done", "error"))[-1]["type"] == "done"
