"""Hostile and malformed input: always a 4xx JSON error, never a 500, and the server stays up."""

from __future__ import annotations

import json

import httpx
import pytest

from .servers import Server

TOO_LONG = "word " * 1100  # 5500 characters, over the 5000 default


def _text(text: str) -> str:
    return json.dumps({"text": text})


# Entity expansion and external references: defusedxml refuses both before anything is expanded or fetched.
_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    "<speak>&c;&c;&c;&c;</speak>"
)
_EXTERNAL_ENTITY = '<!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]><speak>&x;</speak>'


CASES: list[tuple[str, bytes | str, int, str | None]] = [
    ("empty text", json.dumps({"text": ""}), 422, "empty_text"),
    ("whitespace only", json.dumps({"text": " \n\t "}), 422, "empty_text"),
    ("punctuation only", json.dumps({"text": "?!..."}), 422, "empty_text"),
    ("too long", json.dumps({"text": TOO_LONG}), 413, "text_too_long"),
    ("unknown voice", json.dumps({"text": "hi there", "voice": "darth"}), 422, "unknown_voice"),
    ("unknown format", json.dumps({"text": "hi there", "format": "aac"}), 422, "unknown_format"),
    ("unknown language", json.dumps({"text": "hi there", "language": "tlh"}), 422, "unknown_language"),
    (
        "voice/language mismatch",
        json.dumps({"text": "hi", "voice": "en-joe", "language": "yue"}),
        422,
        "unknown_language",
    ),
    ("text is a number", json.dumps({"text": 42}), 422, "invalid_request"),
    ("text is a list", json.dumps({"text": ["a"]}), 422, "invalid_request"),
    ("text is null", json.dumps({"text": None}), 422, "invalid_request"),
    ("missing text", json.dumps({"voice": "en-joe"}), 422, "invalid_request"),
    ("speed as string", json.dumps({"text": "hi", "speed": "fast"}), 422, "invalid_request"),
    ("speed as bool", json.dumps({"text": "hi", "speed": True}), 422, "invalid_request"),
    ("speed too high", json.dumps({"text": "hi", "speed": 9}), 422, "invalid_request"),
    ("speed NaN", b'{"text": "hi", "speed": NaN}', 422, None),
    ("seed negative", json.dumps({"text": "hi", "seed": -1}), 422, "invalid_request"),
    ("seed huge", json.dumps({"text": "hi", "seed": 2**70}), 422, "invalid_request"),
    ("unknown field", json.dumps({"text": "hi", "volume": 11}), 422, "invalid_request"),
    ("NUL byte", json.dumps({"text": "hello\u0000world"}), 422, "invalid_text"),
    ("lone surrogate", b'{"text": "bad \\ud800 text"}', 422, "invalid_text"),
    ("invalid UTF-8", b'{"text": "\xff\xfe"}', 400, None),
    ("malformed JSON", b'{"text": ', 400, "malformed_request"),
    ("JSON array", b"[1, 2, 3]", 422, "invalid_request"),
    ("JSON string", b'"hello"', 422, "invalid_request"),
    ("empty body", b"", 422, None),
    ("deeply nested", b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "malformed_request"),
    ("huge JSON", json.dumps({"text": "a" * 2_000_000}), 413, "payload_too_large"),
    ("format as number", json.dumps({"text": "hi", "format": 3}), 422, "invalid_request"),
    ("voice as list", json.dumps({"text": "hi", "voice": ["en-joe"]}), 422, "invalid_request"),
    ("empty language", json.dumps({"text": "hi", "language": ""}), 422, "unknown_language"),
    ("seed as float", json.dumps({"text": "hi", "seed": 1.5}), 422, "invalid_request"),
    ("speed just too slow", json.dumps({"text": "hi", "speed": 0.49}), 422, "invalid_request"),
    ("speed just too fast", json.dumps({"text": "hi", "speed": 2.01}), 422, "invalid_request"),
    ("control characters only", json.dumps({"text": "\u0001\u0002\u0007"}), 422, "empty_text"),
    ("format characters only", json.dumps({"text": "\u202e\u200b"}), 422, "empty_text"),
    ("text as object", json.dumps({"text": {"a": 1}}), 422, "invalid_request"),
    ("duplicate keys, last empty", b'{"text": "hello", "text": ""}', 422, "empty_text"),
    ("trailing garbage", b'{"text": "hi"} trailing', 400, "malformed_request"),
    ("BOM then garbage", b"\xef\xbb\xbf{bad", 400, "malformed_request"),
    ("lexicons as string", json.dumps({"text": "hi", "lexicons": "acme"}), 422, "invalid_request"),
    ("lexicon as number", json.dumps({"text": "hi", "lexicons": [1]}), 422, "invalid_request"),
    ("unknown lexicon", json.dumps({"text": "hi", "lexicons": ["acme"]}), 422, "unknown_lexicon"),
    ("too many lexicons", json.dumps({"text": "hi", "lexicons": ["a"] * 17}), 422, "invalid_request"),
    ("lexicon name too long", json.dumps({"text": "hi", "lexicons": ["a" * 65]}), 422, "invalid_request"),
    ("lexicon name with NUL", json.dumps({"text": "hi", "lexicons": ["a\u0000"]}), 422, "unknown_lexicon"),
    (
        "sample rate not offered",
        json.dumps({"text": "hi", "format": "pcm", "sample_rate": 12345}),
        422,
        "unknown_format",
    ),
    (
        "sample rate of G.711",
        json.dumps({"text": "hi", "format": "alaw", "sample_rate": 16000}),
        422,
        "unknown_format",
    ),
    (
        "sample rate of flac",
        json.dumps({"text": "hi", "format": "flac", "sample_rate": 8000}),
        422,
        "unknown_format",
    ),
    (
        "sample rate as string",
        json.dumps({"text": "hi", "format": "pcm", "sample_rate": "8k"}),
        422,
        "invalid_request",
    ),
    (
        "sample rate negative",
        json.dumps({"text": "hi", "format": "pcm", "sample_rate": -8000}),
        422,
        "unknown_format",
    ),
    ("format with a made-up rate", json.dumps({"text": "hi", "format": "pcm_12345"}), 422, "unknown_format"),
    ("text_type unknown", json.dumps({"text": "hi", "text_type": "html"}), 422, "invalid_request"),
    ("SSML not well-formed", _text("<speak>oops <b></speak>"), 422, "invalid_ssml"),
    ("SSML asked for, plain text", json.dumps({"text": "hello", "text_type": "ssml"}), 422, "invalid_ssml"),
    ("SSML billion laughs", _text(_LAUGHS), 422, "invalid_ssml"),
    ("SSML external entity", _text(_EXTERNAL_ENTITY), 422, "invalid_ssml"),
    ("SSML external DTD", _text('<!DOCTYPE speak SYSTEM "http://127.0.0.1:9/x.dtd"><speak>x</speak>'), 422,
        "invalid_ssml"),
    ("SSML nested deep", _text("<speak>" + "<s>" * 50 + "x" + "</s>" * 50 + "</speak>"), 422, "invalid_ssml"),
    ("SSML of many elements", _text("<speak>" + "<break/>" * 3000 + "x</speak>"), 422, "invalid_ssml"),
    ("SSML break forever", _text('<speak><break time="9e99s"/>x</speak>'), 422, "invalid_ssml"),
    ("SSML unknown lexicon", _text('<speak><lexicon name="../etc"/>x</speak>'), 422, "unknown_lexicon"),
    ("SSML phoneme alphabet unread", _text('<speak><phoneme alphabet="klingon" ph="x">y</phoneme></speak>'),
        422, "invalid_ssml"),
    ("SSML saying nothing", _text("<speak><break/></speak>"), 422, "invalid_ssml"),
]  # fmt: skip

# Messages on the live sockets: each is answered with an error event naming the problem (or, for a
# keep-alive, nothing), and the socket stays open for the next one.
LIVE: list[tuple[str, str | bytes, str]] = [
    ("not JSON", "{nope", "malformed_request"),
    ("a JSON array", "[1, 2]", "malformed_request"),
    ("a JSON string", '"speak"', "malformed_request"),
    ("null", "null", "malformed_request"),
    ("binary frame", b"\x00\xff", "malformed_request"),
    ("over 64 KB", json.dumps({"type": "speak", "text": "a" * 70_000}), "malformed_request"),
    ("deeply nested", '{"type": "speak", "text": ' + "[" * 5000 + "]" * 5000 + "}", "malformed_request"),
    ("NaN speed", '{"type": "speak", "context": "n", "text": "hi", "speed": NaN}', "malformed_request"),
    ("unknown type", json.dumps({"type": "shout", "text": "hi"}), "invalid_request"),
    ("unknown field", json.dumps({"type": "speak", "text": "hi", "volume": 11}), "invalid_request"),
    ("text is a number", json.dumps({"type": "speak", "text": 5}), "invalid_request"),
    (
        "context too long",
        json.dumps({"type": "speak", "context": "c" * 200, "text": "hi"}),
        "invalid_request",
    ),
    (
        "context with NUL",
        json.dumps({"type": "speak", "context": "a\u0000", "text": "hi"}),
        "invalid_request",
    ),
    ("speak with nothing", json.dumps({"type": "speak", "context": "e"}), "malformed_request"),
    (
        "unknown voice",
        json.dumps({"type": "speak", "context": "v", "text": "hi", "voice": "darth"}),
        "unknown_voice",
    ),
    (
        "unknown format",
        json.dumps({"type": "speak", "context": "f", "text": "hi", "format": "aac"}),
        "unknown_format",
    ),
    (
        "rate not offered",
        json.dumps({"type": "speak", "context": "r", "text": "hi", "sample_rate": 11}),
        "unknown_format",
    ),
    (
        "unknown lexicon",
        json.dumps({"type": "speak", "context": "l", "text": "hi", "lexicons": ["x"]}),
        "unknown_lexicon",
    ),
    (
        "speed too high",
        json.dumps({"type": "speak", "context": "s", "text": "hi", "speed": 9}),
        "invalid_request",
    ),
    ("flush of nothing", json.dumps({"type": "flush", "context": "ghost"}), "unknown_context"),
    ("cancel of nothing", json.dumps({"type": "cancel", "context": "ghost"}), "unknown_context"),
    # orjson refuses a lone surrogate as JSON, before any field is read.
    ("lone surrogate", '{"type": "speak", "context": "u", "text": "bad \\ud800"}', "malformed_request"),
    ("over the buffer", json.dumps({"type": "speak", "context": "b", "text": "x" * 2100}), "text_too_long"),
]


@pytest.mark.parametrize(("name", "body", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_synthesize_bodies(
    client: httpx.Client, name: str, body: bytes | str, status: int, code: str | None
) -> None:
    response = client.post("/v1/synthesize", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code


def test_wrong_content_type(client: httpx.Client) -> None:
    response = client.post("/v1/synthesize", content=b"text=hello", headers={"content-type": "text/plain"})
    assert 400 <= response.status_code < 500
    assert "error" in response.json()


def test_chunked_body_over_the_limit(client: httpx.Client) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"text": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    response = client.post("/v1/synthesize", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_wrong_methods_and_ids(client: httpx.Client) -> None:
    assert client.get("/v1/synthesize").status_code == 405
    assert client.get("/v1/synthesize").json()["error"]["code"] == "method_not_allowed"
    for bad in ("%00", "x" * 5000, "..%2f..%2fetc%2fpasswd", "0" * 32 + "%0a"):  # 4 cases, both kinds
        assert client.get(f"/v1/tasks/{bad}").status_code == 404
        assert client.get(f"/v1/audio/{bad}").status_code == 404
    # Capability links forged, cut, stretched or pointed outside the store: 404, never a 500.
    key, tag = "ab" * 32, "0" * 32
    forged = (
        f"{key}-{tag}.mp3", f"{key}-{tag}", f"{key}-.mp3", f"{key}-{tag}{tag}.mp3", f"-{tag}.mp3",
        f"{key}-{tag}.mp3.mp3", f"{key}-{tag}.%2e%2e", f"{key}-{'z' * 32}.wav", f"{key}--{tag}.ogg",
    )  # fmt: skip
    for bad in forged:
        answer = client.get(f"/v1/audio/{bad}")
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "audio_not_found", bad


def test_bad_speech_bodies(client: httpx.Client) -> None:
    for body, status in (
        ({"input": ""}, 422),
        ({"model": "tts-1"}, 422),
        ({"input": "hi", "voice": "x"}, 422),
        ({"input": "hi", "response_format": "aac"}, 422),
        ({"input": 5}, 422),
    ):
        response = client.post("/v1/audio/speech", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"]


@pytest.mark.parametrize("path", ["/v1/live", "/v1/text-to-speech/en-joe/multi-stream-input"])
def test_hostile_live_messages(server: Server, path: str) -> None:
    from websockets.sync.client import connect

    elevenlabs = "multi-stream" in path
    with connect(server.url.replace("http://", "ws://") + path, open_timeout=30, max_size=None) as ws:
        for name, message, code in LIVE:
            if elevenlabs and isinstance(message, str) and message.startswith('{"type"'):
                continue  # ttsd's own message shapes; ElevenLabs' have their own cases below
            ws.send(message)
            event = json.loads(ws.recv(timeout=30))
            error = event.get("error")
            assert error is not None, (name, event)
            got = error if elevenlabs else error["code"]
            assert got == code, (name, event)
        if elevenlabs:
            for message, code in (
                ({"text": 5, "context_id": "a"}, "malformed_request"),
                ({"text": "hi", "context_id": 7}, "malformed_request"),
                ({"text": "hi", "voice_settings": "fast"}, "malformed_request"),
                ({"text": "hi", "voice_settings": {"speed": True}}, "invalid_request"),
                ({"context_id": "ghost", "flush": True}, "unknown_context"),
                ({"text": "x" * 2100, "context_id": "big"}, "text_too_long"),
            ):
                ws.send(json.dumps(message))
                assert json.loads(ws.recv(timeout=30))["error"] == code, message
        # Still open: a real request is answered.
        if elevenlabs:
            ws.send(json.dumps({"text": "Still here. ", "context_id": "ok", "flush": True}))
            ws.send(json.dumps({"context_id": "ok", "close_context": True}))
            while not json.loads(ws.recv(timeout=60)).get("isFinal"):
                pass
        else:
            ws.send(json.dumps({"type": "speak", "context": "ok", "text": "Still here. "}))
            ws.send(json.dumps({"type": "end", "context": "ok"}))
            while (event := json.loads(ws.recv(timeout=60)))["type"] != "done":
                assert event["type"] != "error", event


def test_server_survives_all_of_it(server: Server) -> None:
    assert server.process.poll() is None
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert server.events() and not server.failures_logged()
