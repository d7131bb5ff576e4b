"""Distributed mode on the suite's shared stack (Redis, SeaweedFS, two one-slot Celery workers,
APIs): texts made once across APIs and workers, work going to idle workers first, what workers keep
and store. Faults, and a worker's engine processes: ``test_distributed_faults``."""

from __future__ import annotations

import io
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import soundfile

from .conftest import finished, unique
from .servers import stop_server, wait_until
from .stack import Stack

pytestmark = pytest.mark.slow


def test_two_apis_two_workers_each_unique_text_synthesized_once(stack: Stack) -> None:
    # Long texts of earlier tests on this stack inflate the measured job time; shedding is not what
    # this test is about.
    patient = {"TTSD_MAX_WAIT": "600"}
    first, second = stack.server("api-a", patient), stack.server("api-b", patient)
    try:
        uniques = [unique(f"Support phrase number {i}, thank you for waiting.") for i in range(40)]
        rng = random.Random(7)
        texts = uniques + [rng.choice(uniques) for _ in range(60)]  # 60 % of requests are repeats
        rng.shuffle(texts)
        syntheses = first.metric("ttsd_syntheses_total")
        limits = httpx.Limits(max_connections=100)
        with (
            first.client(limits=limits) as a,
            second.client(limits=limits) as b,
            ThreadPoolExecutor(50) as pool,
        ):
            clients = [a, b]
            responses = list(
                pool.map(
                    lambda it: clients[it[0] % 2].post(
                        "/v1/synthesize", json={"text": it[1], "format": "mp3"}
                    ),
                    enumerate(texts),
                )
            )
        assert all(r.status_code in (200, 202) for r in responses), [r.text for r in responses]
        urls: dict[str, str] = {}
        for text, response in zip(texts, responses, strict=True):
            body = response.json()
            done = body if response.status_code == 200 else first.wait_task(body["task_id"])
            assert done["status"] == "done", done
            urls[text] = done["url"]
        # Counted by the workers themselves, not inferred from responses.
        assert first.metric("ttsd_syntheses_total") - syntheses == len(uniques)
        for url in urls.values():
            samples, rate = soundfile.read(io.BytesIO(httpx.get(url, timeout=30).content))
            assert len(samples) / rate > 1
    finally:
        stop_server(first)
        stop_server(second)


def test_a_worker_whose_slot_speaks_leaves_the_next_job_to_an_idle_one(stack: Stack) -> None:
    """Light load on two one-slot workers: a job that comes while one of them speaks a long text is
    taken by the idle one, instead of waiting on the busy one behind the long text. Four times,
    since without the rule where it lands is a matter of which worker asked the broker last."""
    srv = stack.server("api-idle", {"TTSD_MAX_WAIT": "600"})
    try:
        for attempt in range(4):
            # The rule is read when a worker asks the broker for more: not while a slot that an
            # earlier job held is still letting go.
            wait_until(lambda: srv.metric("ttsd_busy_slots") == 0, 30, "every slot idle")
            long = " ".join(
                unique(f"Sentence {i} of long answer {attempt} keeps a worker busy.") for i in range(40)
            )
            body = {"input": long, "voice": "en-joe", "response_format": "pcm"}
            with httpx.stream("POST", f"{srv.url}/v1/audio/speech", json=body, timeout=60) as speaking:
                chunks = speaking.iter_raw()
                next(chunks)
                short = {"text": unique(f"A short reply, number {attempt}."), "voice": "en-joe"}
                assert finished(srv, httpx.post(f"{srv.url}/v1/synthesize", json=short))["status"] == "done"
                still = httpx.get(f"{srv.url}/v1/tasks/{speaking.headers['x-task-id']}").json()
                assert still["stage"] == "synthesizing", still
    finally:
        stop_server(srv)


def test_a_job_waiting_on_a_busy_worker_is_given_back_when_another_frees_first(stack: Stack) -> None:
    """Both one-slot workers speak, one a short text and one a long one, when a short job comes:
    the broker gives it to whichever worker asked first, here the one with the long text. When the
    short text ends first, the job is given back and the freed worker speaks it, while the long
    text still speaks. The short text speaks before the long one is sent: its worker then holds
    back while the other is idle and no job waits in the broker, and asks only once the other's
    busy state is written, after that one (with the long text) asked. Sent together, the long text
    could still wait in the broker when the first worker looked: an idle slot elsewhere counts only
    beyond the jobs waiting, so it asked at once, first in line, and took the short job itself."""
    srv = stack.server("api-hand-back", {"TTSD_MAX_WAIT": "600"})

    def speaking(text: str) -> Any:
        body = {"input": text, "voice": "en-joe", "response_format": "pcm"}
        return httpx.stream("POST", f"{srv.url}/v1/audio/speech", json=body, timeout=60)

    try:
        for attempt in range(2):
            wait_until(lambda: srv.metric("ttsd_busy_slots") == 0, 30, "every slot idle")
            given_back = srv.metric("ttsd_jobs_requeued_total", reason="handed_back")
            short = " ".join(unique(f"Sentence {i} of short answer {attempt}.") for i in range(4))
            long = " ".join(
                unique(f"Sentence {i} of long answer {attempt} keeps a worker busy.") for i in range(40)
            )
            with speaking(short) as first:
                heard = [first.iter_raw()]  # kept: a dropped iterator closes its response
                next(heard[0])
                wait_until(lambda: srv.metric("ttsd_busy_slots") == 1, 10, "the short text's slot busy")
                with speaking(long) as second:
                    heard.append(second.iter_raw())
                    next(heard[1])
                    wait_until(lambda: srv.metric("ttsd_busy_slots") == 2, 10, "both slots busy")
                    job = {"text": unique(f"A short reply, number {attempt}."), "voice": "en-joe"}
                    assert finished(srv, httpx.post(f"{srv.url}/v1/synthesize", json=job))["status"] == "done"
                    still = httpx.get(f"{srv.url}/v1/tasks/{second.headers['x-task-id']}").json()
                    assert still["stage"] == "synthesizing", still
            # It got there by a hand-back (a holder that landed behind the other may have been
            # given back too, before its first audio).
            assert srv.metric("ttsd_jobs_requeued_total", reason="handed_back") >= given_back + 1
    finally:
        stop_server(srv)


def test_workers_keep_no_audio_on_disk_and_every_redis_key_is_bounded(stack: Stack, tmp_path: Path) -> None:
    # The workers' data directory (shared with the API processes in this test) never got audio files.
    assert not list(stack.tmp.glob("data/audio/**/*.mp3"))
    client = redis.Redis.from_url(stack.env["TTSD_REDIS_URL"])
    # Keys without a TTL are the bounded bookkeeping ones (or Celery's own bindings).
    unbounded = {
        # The cache budget's bookkeeping.
        *("ttsd:lru", "ttsd:expiry", "ttsd:sizes", "ttsd:bytes", "ttsd:objects", "ttsd:refs"),
        *("ttsd:stats", "ttsd:workers", "ttsd:busy"),  # counters; live processes
        *("ttsd:pending", "ttsd:leases"),  # jobs published and not taken; jobs held under a lease
    }
    for key in client.scan_iter(count=1000):
        name = key.decode()
        if client.ttl(key) == -1:
            assert name in unbounded or name.startswith("ttsd:celery:"), name
        assert name.startswith("ttsd:"), name


def test_a_texts_wav_is_stored_as_sent_and_served_as_wav(stack: Stack) -> None:
    """SeaweedFS gzips objects typed audio/wav (speech barely shrinks: it costs its CPU on every
    store, and every sentence read out of the file unzips the whole of it)."""
    srv = stack.server("api-wav")
    try:
        with srv.client() as client:
            body = {"text": unique("Stored as sent. Twice."), "format": "wav"}
            url = finished(srv, client.post("/v1/synthesize", json=body))["url"]
    finally:
        stop_server(srv)
    audio = httpx.get(url, timeout=30)
    assert audio.status_code == 200 and audio.headers["content-type"].startswith("audio/wav")
    samples, rate = soundfile.read(io.BytesIO(audio.content))
    assert len(samples) / rate > 1
    # The filer's own record of the object: each chunk says whether SeaweedFS compressed it.
    filer = f"http://127.0.0.1:{stack.s3.ports['filer.port']}/buckets{httpx.URL(url).path}"
    chunks = httpx.get(filer, params={"metadata": "true"}, timeout=10).json()["chunks"]
    assert chunks and not any(chunk.get("is_compressed") for chunk in chunks), chunks


def test_sentences_whose_object_went_away_are_made_again(stack: Stack) -> None:
    """Object storage lost a text's file under the index (a lifecycle rule, a hand): a text with
    its sentences is made again, never failed on the missing object."""
    import boto3

    srv = stack.server("api-lost")
    first, second = unique("Kept in the index."), unique("Lost from the bucket.")
    try:
        with srv.client() as client:
            url = finished(srv, client.post("/v1/synthesize", json={"text": f"{first} {second}"}))["url"]
            bucket, name = httpx.URL(url).path.lstrip("/").split("/", 1)
            s3 = boto3.client(
                "s3",
                endpoint_url=stack.s3.url,
                aws_access_key_id=stack.env["TTSD_S3_ACCESS_KEY"],
                aws_secret_access_key=stack.env["TTSD_S3_SECRET_KEY"],
                region_name="us-east-1",
            )
            s3.delete_object(Bucket=bucket, Key=name)
            again = finished(srv, client.post("/v1/synthesize", json={"text": f"{second} {first}"}))
            assert again["status"] == "done" and httpx.get(again["url"], timeout=30).status_code == 200
    finally:
        stop_server(srv)


def test_workers_speak_lexicons_they_do_not_have(stack: Stack, tmp_path: Path) -> None:
    """The API applies the lexicons and the job carries what to say: workers, started without
    TTSD_LEXICON_DIR, speak an eSpeak phoneme entry of the API's lexicon."""
    directory = tmp_path / "lexicons"
    directory.mkdir()
    (directory / "brands.pls").write_text(
        '<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" '
        'alphabet="x-espeak" xml:lang="en-US"><lexeme><grapheme>ACME</grapheme>'
        "<phoneme>s'u:p3m'A@k@t</phoneme></lexeme></lexicon>"
    )
    srv = stack.server("api-lexicons", {"TTSD_LEXICON_DIR": str(directory)})
    seconds = {}
    try:
        with srv.client() as client:
            for text, lexicons in (("ACME", []), ("ACME", ["brands"]), ("supermarket", [])):
                body = {"text": f"{text} is open.", "voice": "en-us-female", "lexicons": lexicons}
                done = finished(srv, client.post("/v1/synthesize", json=body))
                seconds[(text, bool(lexicons))] = soundfile.info(
                    io.BytesIO(client.get(done["url"]).content)
                ).duration
    finally:
        stop_server(srv)
    said = seconds[("ACME", True)]
    assert said > 1.15 * seconds[("ACME", False)], seconds
    assert abs(said - seconds[("supermarket", False)]) < 0.05 * said, seconds
