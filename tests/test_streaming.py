"""Streaming: first audio while the rest is made, in both modes; SSE, WebSocket and task events.
Hanging up: ``test_hang_up``."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import soundfile
from websockets.sync.client import connect

from .conftest import unique
from .servers import Server, wait_until
from .speaking import PARAGRAPH, speech, stored


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_stream_equals_stored_audio_sample_for_sample(server: Server, fmt: str) -> None:
    text = unique(PARAGRAPH)
    streamed = speech(server, text, fmt)
    assert streamed.status_code == 200 and streamed.headers["x-cache"] == "miss"
    kept = stored(server, text, fmt)
    if fmt == "pcm":
        assert streamed.content == kept
    else:
        a, rate_a = soundfile.read(io.BytesIO(streamed.content), dtype="int16")
        b, rate_b = soundfile.read(io.BytesIO(kept), dtype="int16")
        assert rate_a == rate_b == 22050 and np.array_equal(a, b)
    # A repeat streams the stored file (for wav, with its final sizes in the header).
    again = speech(server, text, fmt)
    assert again.headers["x-cache"] == "hit" and again.content == kept


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "opus", "flac"])
def test_every_format_streams_and_decodes(server: Server, fmt: str) -> None:
    text = unique(PARAGRAPH)
    streamed = speech(server, text, fmt)
    assert streamed.status_code == 200
    samples, rate = soundfile.read(io.BytesIO(streamed.content))
    kept, kept_rate = soundfile.read(io.BytesIO(stored(server, text, fmt)))
    assert abs(len(samples) / rate - len(kept) / kept_rate) < 0.15


def test_first_audio_arrives_before_the_rest_is_made(server: Server) -> None:
    text = unique(" ".join([PARAGRAPH] * 3))
    body = {"input": text, "voice": "en-joe", "response_format": "pcm"}
    arrivals = []
    started = time.monotonic()
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=120) as response:
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic() - started, len(chunk)))
    first, last = arrivals[0][0], arrivals[-1][0]
    assert len(arrivals) > 3
    assert first < last / 2, arrivals  # sentence by sentence, not all at the end


def test_concurrent_streams_do_not_mix(server: Server) -> None:
    texts = [
        unique(f"Stream number {i} says its own words. It has a second sentence too.") for i in range(20)
    ]
    with ThreadPoolExecutor(20) as pool:
        streams = list(pool.map(lambda t: speech(server, t, "pcm", voice="en-heart").content, texts))
    for text, audio in zip(texts, streams, strict=True):
        assert audio == stored(server, text, "pcm", voice="en-heart")


def test_identical_streams_share_one_synthesis(server: Server) -> None:
    text = unique(PARAGRAPH)
    before = server.metric("ttsd_syntheses_total")
    with ThreadPoolExecutor(8) as pool:
        streams = list(pool.map(lambda _: speech(server, text, "pcm").content, range(8)))
    assert all(s == streams[0] for s in streams) and len(streams[0]) > 100_000
    assert server.metric("ttsd_syntheses_total") - before == 1


def test_disconnect_cancels_the_job_and_frees_the_slot(server: Server) -> None:
    text = unique(" ".join(f"Sentence {i} of a stream nobody will finish hearing." for i in range(40)))
    body = {"input": text, "voice": "en-joe", "response_format": "pcm"}
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=60) as response:
        task_id = response.headers["x-task-id"]
        next(response.iter_raw())
    left = time.monotonic()
    while True:
        status = httpx.get(f"{server.url}/v1/tasks/{task_id}").json()
        if status["status"] == "failed":
            break
        assert time.monotonic() - left < 1.0, status
        time.sleep(0.02)
    assert status["error"]["code"] == "cancelled"
    if server.mode == "embedded":  # the slot is free once the engine ends its current sentence
        wait_until(lambda: server.metric("ttsd_busy_slots") == 0, 2.0, "the slot to be freed")
    # Nothing cached from the cancelled job; the next listener gets the whole text.
    full = speech(server, text, "pcm")
    assert full.status_code == 200 and full.headers["x-cache"] == "miss" and len(full.content) > 1_000_000


def test_sse_stream_format(server: Server) -> None:
    text = unique("Events carry the audio. Then a done event.")
    response = speech(server, text, "mp3", stream_format="sse")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    import base64

    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    samples, rate = soundfile.read(io.BytesIO(audio))
    assert len(samples) / rate > 1


def test_websocket_several_requests_and_errors(server: Server) -> None:
    url = server.url.replace("http://", "ws://") + "/v1/stream"
    with connect(url, open_timeout=10) as ws:
        for text in (unique("First request on the socket."), unique("Second request, same socket.")):
            ws.send(json.dumps({"text": text, "voice": "en-heart", "format": "pcm"}))
            audio = b""
            while True:
                message = ws.recv(timeout=60)
                if isinstance(message, bytes):
                    audio += message
                    continue
                event = json.loads(message)
                break
            assert event["event"] == "done" and event["bytes"] == len(audio) > 10_000
            assert event["sample_rate"] == 24000
        for bad, code in (("not json", "malformed_request"), (json.dumps({"text": ""}), "empty_text"),
                          (json.dumps({"text": "hi", "voice": "nobody"}), "unknown_voice")):  # fmt: skip
            ws.send(bad)
            event = json.loads(ws.recv(timeout=10))
            assert event["event"] == "error" and event["error"]["code"] == code
        ws.send(json.dumps({"text": unique("Still open after errors."), "format": "wav"}))
        first = ws.recv(timeout=60)
        assert isinstance(first, bytes) and first.startswith(b"RIFF")


def test_websocket_requests_sent_back_to_back_are_answered_in_order(server: Server) -> None:
    """A request that arrives while the one before it waits for its first audio is read then
    (a close would let go of the job) and answered after it, whole."""
    texts = [unique(f"Back to back request {n}, with a second sentence.") for n in ("one", "two")]
    with connect(server.url.replace("http://", "ws://") + "/v1/stream", open_timeout=10) as ws:
        for text in texts:
            ws.send(json.dumps({"text": text, "voice": "en-joe", "format": "pcm"}))
        for text in texts:
            audio = b""
            while isinstance(message := ws.recv(timeout=60), bytes):
                audio += message
            event = json.loads(message)
            assert event["event"] == "done" and event["bytes"] == len(audio) > 10_000
            assert audio == stored(server, text, "pcm")


def test_task_events(server: Server) -> None:
    text = unique(" ".join(f"Progress sentence number {i}." for i in range(12)))
    task = httpx.post(f"{server.url}/v1/synthesize", json={"text": text}).json()
    events = []
    with httpx.stream("GET", f"{server.url}/v1/tasks/{task['task_id']}/events", timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and events[-1]["status"] == "done" and events[-1]["url"]
    assert len(events) >= 3
    assert httpx.get(f"{server.url}/v1/tasks/{'0' * 32}/events").status_code == 404


def test_hit_streams_from_storage(server: Server) -> None:
    text = unique("Cached, then streamed from storage.")
    first = speech(server, text, "ogg")
    stored(server, text, "ogg")  # the stream's job has stored the file
    before = server.metric("ttsd_syntheses_total")
    again = speech(server, text, "ogg")
    assert again.headers["x-cache"] == "hit"
    assert server.metric("ttsd_syntheses_total") == before
    samples, rate = soundfile.read(io.BytesIO(again.content))
    assert abs(len(samples) / rate - soundfile.info(io.BytesIO(first.content)).duration) < 0.15
