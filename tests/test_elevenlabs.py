"""ElevenLabs' stream-input and multi-stream-input: the protocol by hand, and two real voice-bot
clients from PyPI, unmodified (LiveKit Agents' ElevenLabs plugin, Pipecat's
ElevenLabsTTSService), each run from their own virtual environment (scripts/_clients.sh)."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.sync.client import ClientConnection, connect

from .conftest import unique
from .servers import Server, start_server, stop_server

CLIENTS = Path(__file__).resolve().parent.parent / ".venv-clients" / "bin" / "python"
HERE = Path(__file__).resolve().parent / "clients"
REPLY = "Thanks for calling, your parcel is on its way. It should reach you by Friday. Anything else?"
LONG = (
    "This is the first sentence of a long answer. Here is a second sentence that keeps going. "
    "A third one follows with more words. And a fourth sentence closes the reply. "
    "Then a fifth, just in case. And a sixth for good measure."
)


def run_client(script: str, *args: str) -> dict[str, Any]:
    assert CLIENTS.exists(), "the third-party clients are installed by scripts/test (scripts/_clients.sh)"
    done = subprocess.run(
        [str(CLIENTS), str(HERE / script), *args], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def el_socket(server: Server, path: str, query: str = "", **kwargs: Any) -> ClientConnection:
    url = f"{server.url.replace('http://', 'ws://')}/v1/text-to-speech/{path}{query}"
    return connect(url, open_timeout=30, max_size=None, **kwargs)


def messages(ws: ClientConnection, until: Any, timeout: float = 90) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        out.append(json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
        if until(out[-1]):
            return out


def speech_seconds(server: Server, text: str, rate: int) -> float:
    with server.client() as client:
        answer = client.post(
            "/v1/audio/speech",
            json={"input": text, "voice": "en-joe", "response_format": "pcm", "sample_rate": rate},
        )
    return len(answer.content) / 2 / rate


@pytest.mark.slow
def test_livekit_agents_plugin_unmodified(server: Server) -> None:
    text = unique(REPLY)
    got = run_client("livekit_tts.py", "--url", server.url, "--voice", "en-joe", "--text", text)
    assert got["rates"] == [16000]
    assert abs(got["samples"] / 16000 - speech_seconds(server, text, 16000)) < 0.5, got


@pytest.mark.slow
@pytest.mark.parametrize("server", ["embedded"], indirect=True)
def test_pipecat_service_unmodified_and_its_barge_in(server: Server) -> None:
    text = unique(REPLY)
    url = server.url.replace("http://", "ws://")
    got = run_client("pipecat_tts.py", "--url", url, "--voice", "en-joe", "--text", text)
    assert got["stopped"] == 1  # isFinal reached it
    assert abs(got["seconds"] - speech_seconds(server, text, 16000)) < 0.5, got
    # The caller talks over the bot while its reply is still being written: Pipecat sends
    # close_context, and the sentences not yet flushed are never made.
    server.wait_idle()
    made = server.metric("ttsd_syntheses_total")
    long = " ".join(unique(s) for s in LONG.split(". "))
    got = run_client(
        "pipecat_tts.py",
        "--url",
        url,
        "--voice",
        "en-joe",
        "--interrupt",
        "--token-delay",
        "0.1",
        "--text",
        long,
    )
    server.wait_idle()
    assert got["samples"] > 0
    assert server.metric("ttsd_syntheses_total") - made <= 2, "sentences after the barge-in were made"


def test_stream_input_by_hand(server: Server) -> None:
    text = unique(REPLY)
    with el_socket(server, "en-joe/stream-input", "?output_format=ulaw_8000") as ws:
        ws.send(json.dumps({"text": " ", "voice_settings": {"stability": 0.5}, "generation_config": {}}))
        for token in text.split(" "):
            ws.send(json.dumps({"text": token + " ", "try_trigger_generation": True}))
        ws.send(json.dumps({"text": ""}))  # the end of the input
        got = messages(ws, lambda m: m.get("isFinal") is True or "error" in m)
        with pytest.raises(Exception, match="1000"):
            ws.recv(timeout=10)  # the server closes once final
    assert "error" not in got[-1], got[-1]
    audio = b"".join(base64.b64decode(m["audio"]) for m in got if m.get("audio"))
    assert abs(len(audio) / 8000 - speech_seconds(server, text, 8000)) < 0.3
    spans = [m["alignment"] for m in got if m.get("alignment")]
    # What ttsd knows: each sentence as one span, never per-character times it did not measure.
    assert [s["chars"] for s in spans][:2] == [
        ["Thanks for calling, your parcel is on its way."],
        ["It should reach you by Friday."],
    ]
    assert all(len(s["charStartTimesMs"]) == len(s["charDurationsMs"]) == 1 for s in spans)


def test_multi_stream_input_contexts_flush_and_close_context(server: Server) -> None:
    kept = unique("This part was flushed.")
    dropped = unique("This part was never flushed and is dropped at the barge-in.")
    with el_socket(server, "en-joe/multi-stream-input", "?output_format=pcm_16000") as ws:
        ws.send(json.dumps({"text": " ", "context_id": "turn1"}))
        ws.send(json.dumps({"text": kept + " ", "context_id": "turn1", "flush": True}))
        ws.send(json.dumps({"text": "", "context_id": "turn1"}))  # a keep-alive, nothing more
        ws.send(json.dumps({"text": dropped + " ", "context_id": "turn1"}))
        ws.send(json.dumps({"context_id": "turn1", "close_context": True}))
        ws.send(
            json.dumps(
                {"text": unique("A second context answers.") + " ", "context_id": "turn2", "flush": True}
            )
        )
        ws.send(json.dumps({"context_id": "turn2", "close_context": True}))
        got: list[dict[str, Any]] = []
        finals: set[str] = set()
        while finals != {"turn1", "turn2"}:
            got.append(json.loads(ws.recv(timeout=60)))
            assert "error" not in got[-1], got[-1]
            if got[-1].get("isFinal"):
                finals.add(got[-1]["contextId"])
        ws.send(json.dumps({"close_socket": True}))
        with pytest.raises(Exception, match="1000"):
            ws.recv(timeout=10)
    first = b"".join(
        base64.b64decode(m["audio"]) for m in got if m.get("audio") and m["contextId"] == "turn1"
    )
    spans = [m["alignment"]["chars"][0] for m in got if m.get("alignment") and m["contextId"] == "turn1"]
    assert spans == ["This part was flushed.", kept.rsplit(". ", 1)[1]]  # the rest was dropped
    assert np.frombuffer(first, "<i2").size > 0


def test_elevenlabs_socket_errors(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        env={"TTSD_API_KEYS": "el:xi-secret", "TTSD_ENGINES": "espeak", "TTSD_DEFAULT_VOICE": "en-us-female"},
    )
    try:
        with el_socket(server, "nobody/stream-input", additional_headers={"xi-api-key": "xi-secret"}) as ws:
            assert json.loads(ws.recv(timeout=10))["error"] == "unknown_voice"
            with pytest.raises(Exception, match="1008"):
                ws.recv(timeout=10)
        with el_socket(server, "en-us-female/stream-input", "?output_format=wma_44100") as ws:
            assert json.loads(ws.recv(timeout=10))["error"] == "invalid_request"
        # xi_api_key in the first message, as ElevenLabs allows.
        with el_socket(server, "en-us-female/stream-input", "?output_format=pcm_8000") as ws:
            ws.send(json.dumps({"text": " ", "xi_api_key": "xi-secret"}))
            ws.send(json.dumps({"text": "Hello there. "}))
            ws.send(json.dumps({"text": ""}))
            assert messages(ws, lambda m: m.get("isFinal") is True or "error" in m)[-1].get("isFinal")
        with el_socket(server, "en-us-female/multi-stream-input") as ws:
            ws.send(json.dumps({"text": " ", "xi_api_key": "wrong"}))
            assert json.loads(ws.recv(timeout=10))["error"] == "unauthorized"
        with el_socket(
            server, "en-us-female/multi-stream-input", additional_headers={"xi-api-key": "xi-secret"}
        ) as ws:
            ws.send("not json")
            assert json.loads(ws.recv(timeout=10))["error"] == "malformed_request"
            ws.send(json.dumps({"text": 5, "context_id": "a"}))
            assert json.loads(ws.recv(timeout=10))["error"] == "malformed_request"
            ws.send(json.dumps({"text": "Fine. ", "context_id": "a", "voice_settings": {"speed": 9}}))
            assert json.loads(ws.recv(timeout=10))["error"] == "invalid_request"
        assert "xi-secret" not in server.log()
    finally:
        stop_server(server)
