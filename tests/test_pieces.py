"""Sentence-level reuse: every sentence's audio is a cached piece that other texts are built from."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ttsd.engines import select
from ttsd.jobs.pieces import piece_keys
from ttsd.prepare import SynthesisRequest, prepare_job
from ttsd.state.base import CacheEntry
from ttsd.state.sqlite import SqliteCacheIndex
from ttsd.store.base import PIECE
from ttsd.voices import Catalogue

from .conftest import finished, unique
from .servers import Server, start_server, stop_server

VOICE = "en-heart"  # hibari: 24 kHz, fast
RATE = 24000
PAUSE = int(RATE * 0.12)


def tag() -> str:
    return str(time.time_ns() % 10**12)


def counts(server: Server) -> dict[str, float]:
    return {r: server.metric("ttsd_sentence_requests_total", result=r) for r in ("hit", "miss", "merged")}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


def pcm(
    server: Server, client: httpx.Client, text: str, voice: str = VOICE
) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
    response = client.post("/v1/synthesize", json={"text": text, "voice": voice, "format": "pcm"})
    done = finished(server, response)
    assert done["status"] == "done", done
    return np.frombuffer(client.get(done["url"]).content, dtype="<i2"), response.json()


def test_a_sentence_shared_by_two_texts_is_synthesized_once(server: Server, client: httpx.Client) -> None:
    t = tag()
    first = f"Thanks for calling, caller {t}. Your order {t} has shipped. Is there anything else?"
    second = f"Thanks for calling, caller {t}. Your refund {t} was issued. Is there anything else?"
    before = counts(server)
    pcm(server, client, first)
    middle = counts(server)
    assert delta(middle, before) == {"hit": 0, "miss": 3, "merged": 0}
    response = client.post("/v1/synthesize", json={"text": second, "voice": VOICE})
    assert response.status_code == 202
    assert response.json()["sentences"] == 3 and response.json()["sentences_reused"] == 2
    done = finished(server, response)
    assert done["sentences"] == 3 and done["sentences_reused"] == 2
    assert delta(counts(server), middle) == {"hit": 2, "miss": 1, "merged": 0}


def test_an_assembled_text_equals_its_pieces_joined_sample_for_sample(
    server: Server, client: httpx.Client
) -> None:
    t = tag()
    a, b = f"Alpha piece {t} is here.", f"Bravo piece {t} follows!"
    # A one-sentence text is exactly its piece.
    piece_a, _ = pcm(server, client, a)
    piece_b, _ = pcm(server, client, b)
    synthesized_before = server.metric("ttsd_syntheses_total")
    joined, body = pcm(server, client, f"{b} {a}")  # a text never spoken: all of it cached
    assert body["status"] == "done" and body["sentences"] == body["sentences_reused"] == 2
    expected = np.concatenate([piece_b, np.zeros(PAUSE, np.int16), piece_a])
    assert np.array_equal(joined, expected)
    assert server.metric("ttsd_syntheses_total") == synthesized_before  # no engine
    # A text made partly by the engine joins the same way.
    c = f"Charlie piece {t} is new."
    mixed, _ = pcm(server, client, f"{a} {c} {b}")
    piece_c, _ = pcm(server, client, c)
    gap = np.zeros(PAUSE, np.int16)
    assert np.array_equal(mixed, np.concatenate([piece_a, gap, piece_c, gap, piece_b]))


def test_sentences_of_one_text_made_together_share_one_flight(server: Server, client: httpx.Client) -> None:
    """Two different texts that share a new sentence, asked for at once: it is made once."""
    t = tag()
    shared = f"This shared sentence {t} is new to everyone."
    bodies = [{"text": f"{shared} Only the first text {t} says this.", "voice": VOICE},
              {"text": f"{shared} Only the second text {t} says that.", "voice": VOICE}]  # fmt: skip
    before = counts(server)
    responses: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda b=b: responses.append(client.post("/v1/synthesize", json=b)))
               for b in bodies]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(finished(server, r)["status"] == "done" for r in responses)
    change = delta(counts(server), before)
    assert change["miss"] == 3, change  # the shared sentence once, each text's own once
    assert change["hit"] + change["merged"] == 1, change


def test_streaming_sends_cached_leading_sentences_before_the_engine_speaks(server: Server) -> None:
    t = tag()
    opening = f"Welcome back, caller {t}."
    with server.client() as client:
        pcm(server, client, opening, "en-joe")
    text = opening + " " + " ".join(f"Then new sentence {i} number {t} is spoken." for i in range(20))
    body = {"input": text, "voice": "en-joe", "response_format": "pcm"}
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=60) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        first = next(chunk for chunk in chunks if chunk)
        status = httpx.get(f"{server.url}/v1/tasks/{response.headers['x-task-id']}").json()
        # The opening arrived while the engine had most of the text still to speak.
        assert status["status"] in ("queued", "running") and status["progress"] < 50, status
        assert status["sentences"] == 21 and status["sentences_reused"] == 1
        rest = b"".join(chunks)
    whole = np.frombuffer(first + rest, dtype="<i2")
    with server.client() as client:
        stored, _ = pcm(server, client, text, "en-joe")
    assert np.array_equal(whole, stored)


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"TTSD_ENGINE_SLOTS": "1", "TTSD_ENGINES": "hibari,piper", "TTSD_DEFAULT_VOICE": VOICE}
    srv = start_server(tmp_path_factory.mktemp("one-slot"), env=env)
    yield srv
    stop_server(srv)


def test_a_near_hit_never_takes_a_slot(one_slot: Server) -> None:
    t = tag()
    parts = [f"Part one {t}.", f"Part two {t}.", f"Part three {t}."]
    with one_slot.client() as client:
        for part in parts:
            pcm(one_slot, client, part)
        # The only slot is busy with a long text ...
        long_text = unique(" ".join(f"Sentence {i} of a long announcement." for i in range(60)))
        long_task = client.post("/v1/synthesize", json={"text": long_text, "voice": "en-joe"}).json()
        deadline = time.monotonic() + 30
        while client.get(f"/v1/tasks/{long_task['task_id']}").json()["stage"] != "synthesizing":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        busy_before = one_slot.metric("ttsd_slot_busy_seconds_total")
        # ... and a reply made of cached sentences is answered at once, without it.
        response = client.post("/v1/synthesize", json={"text": " ".join(reversed(parts)), "voice": VOICE})
        assert response.status_code == 200, response.json()
        assert response.json()["sentences_reused"] == 3
        assert client.get(f"/v1/tasks/{long_task['task_id']}").json()["status"] == "running"
        assert one_slot.metric("ttsd_slot_busy_seconds_total") == busy_before
        assert one_slot.wait_task(long_task["task_id"])["status"] == "done"


def stored_pieces(server: Server, text: str) -> list[CacheEntry]:
    """The index's entries of the text's pieces (read from the server's SQLite file)."""
    catalogue = Catalogue(select(("hibari", "piper")), VOICE)
    job = prepare_job(SynthesisRequest(text, VOICE), catalogue, server.links, max_text_chars=5000)
    index = SqliteCacheIndex(server.data_dir / "index.sqlite3")
    try:
        found = [index.get(key, PIECE) for key in piece_keys(job.spec, job.sentences)]
    finally:
        index.close()
    assert all(entry is not None for entry in found)
    return [entry for entry in found if entry is not None]


def test_a_missing_or_corrupt_piece_is_made_again_never_served(one_slot: Server) -> None:
    t = tag()
    text = f"First kept sentence {t}. Second spoiled sentence {t}. Third lost sentence {t}."
    audio_dir = one_slot.data_dir / "audio"
    with one_slot.client() as client:
        pcm(one_slot, client, text)
        first, second, third = stored_pieces(one_slot, text)
        # Sentences made close together share an object (their own, or the text's file, with the
        # pauses between them), a range each, in the order spoken.
        for earlier, later in ((first, second), (second, third)):
            if earlier.object_name == later.object_name:
                assert later.start >= earlier.start + earlier.size
        kept = (audio_dir / first.object_name).read_bytes()[first.start : first.start + first.size]
        data = bytearray((audio_dir / second.object_name).read_bytes())
        data[second.start + 100 : second.start + 200] = b"\x7f" * 100
        (audio_dir / second.object_name).write_bytes(bytes(data))
        cut = (audio_dir / third.object_name).read_bytes()
        (audio_dir / third.object_name).write_bytes(cut[: third.start + third.size // 2])  # the last range
        before = counts(one_slot)
        # Another text with the same sentences, in another order: the index still lists all three.
        again, _ = pcm(one_slot, client, f"Third lost sentence {t}. First kept sentence {t}. "
                                            f"Second spoiled sentence {t}.")  # fmt: skip
        change = delta(counts(one_slot), before)
        assert change == {"hit": 1, "miss": 2, "merged": 0}, change
        now_first, made_second, made_third = stored_pieces(one_slot, text)  # made again
        assert now_first == first and first.object_name not in (
            made_second.object_name,
            made_third.object_name,
        )
        a = np.frombuffer(kept, dtype="<i2")
        b, c = (
            np.frombuffer((audio_dir / e.object_name).read_bytes()[e.start : e.start + e.size], dtype="<i2")
            for e in (made_second, made_third)
        )
        gap = np.zeros(PAUSE, np.int16)
        assert np.array_equal(again, np.concatenate([c, gap, a, gap, b]))


def test_cancelled_stream_caches_no_text_but_keeps_finished_sentences(one_slot: Server) -> None:
    # Enough sentences that the listener leaves long before the last; the text is made again whole.
    sentences = 12
    t = tag()
    text = " ".join(f"Sentence {i} of stream {t} that nobody finishes." for i in range(sentences))
    body = {"input": text, "voice": "en-joe", "response_format": "pcm"}
    with httpx.stream("POST", f"{one_slot.url}/v1/audio/speech", json=body, timeout=60) as response:
        task_id = response.headers["x-task-id"]
        next(response.iter_raw())
    status = one_slot.wait_task(task_id, timeout=30)
    assert status["status"] == "failed" and status["error"]["code"] == "cancelled"
    with one_slot.client() as client:
        again = client.post("/v1/synthesize", json={"text": text, "voice": "en-joe"})
        assert again.status_code == 202  # the text is not cached ...
        reused = again.json()["sentences_reused"]
        assert 1 <= reused < sentences  # ... but the sentences spoken before the listener left are
        assert one_slot.wait_task(again.json()["task_id"])["status"] == "done"


def test_reuse_off_caches_no_pieces(tmp_path: Path) -> None:
    env = {"TTSD_ENGINES": "hibari", "TTSD_DEFAULT_VOICE": VOICE, "TTSD_SENTENCE_REUSE_EXCEPT": "hibari"}
    srv = start_server(tmp_path, env=env)
    try:
        t = tag()
        with srv.client() as client:
            pcm(srv, client, f"Shared start {t}. First end {t}.")
            response = client.post("/v1/synthesize", json={"text": f"Shared start {t}. Second end {t}."})
            assert response.status_code == 202 and response.json()["sentences_reused"] == 0
            assert finished(srv, response)["status"] == "done"
        assert srv.metric("ttsd_sentence_requests_total", result="miss") == 4
        assert not list((srv.data_dir / "audio").rglob("piece*.pcm"))
    finally:
        stop_server(srv)
