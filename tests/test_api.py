"""The HTTP contract, against a real server with real engines."""

from __future__ import annotations

import io

import httpx
import soundfile

from .conftest import finished, unique
from .servers import Server


def path_of(url: str) -> str:
    """A URL without its query (presigned S3 URLs carry a fresh signature each time)."""
    return url.split("?", 1)[0]


def test_miss_then_poll_then_hit(server: Server, client: httpx.Client) -> None:
    body = {"text": unique("Thank you for calling. How can I help?"), "format": "mp3"}
    first = client.post("/v1/synthesize", json=body)
    assert first.status_code == 202, first.text
    queued = first.json()
    assert queued["status"] in ("queued", "running") and not queued["merged"]
    assert first.headers["location"] == queued["status_url"]
    done = server.wait_task(queued["task_id"])
    assert done["status"] == "done" and done["stage"] == "done" and done["progress"] == 100
    assert done["key"] == queued["key"] and f"{queued['key']}" in done["url"]

    hit = client.post("/v1/synthesize", json=body)
    assert hit.status_code == 200
    assert hit.json()["status"] == "done" and hit.json()["cached"] is True
    assert hit.json()["key"] == queued["key"] and hit.json()["format"] == "mp3"
    assert path_of(hit.json()["url"]) == path_of(done["url"])
    assert hit.json()["duration"] > 1

    redirect = client.post("/v1/synthesize", params={"redirect": "true"}, json=body)
    assert redirect.status_code == 302 and path_of(redirect.headers["location"]) == path_of(done["url"])

    audio = client.get(done["url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
    samples, rate = soundfile.read(io.BytesIO(audio.content))
    assert rate == 22050 and abs(len(samples) / rate - hit.json()["duration"]) < 0.1


def test_every_format_from_one_master(server: Server, client: httpx.Client) -> None:
    text = unique("Every format carries the same samples.")
    durations = {}
    syntheses_before = server.metric("ttsd_syntheses_total")
    for fmt in ("wav", "flac", "mp3", "ogg", "opus", "pcm"):
        response = client.post("/v1/synthesize", json={"text": text, "format": fmt, "voice": "en-heart"})
        # The first is synthesized; the others are assembled from its cached sentence, at once
        # (200) unless a loaded machine takes longer than the request waits for that (202): either
        # way without an engine, which the count of syntheses below checks.
        assert response.status_code == 202 if fmt == "wav" else response.status_code in (200, 202)
        done = finished(server, response)
        assert done["status"] == "done", done
        data = client.get(done["url"]).content
        assert data, done
        if fmt == "pcm":
            durations[fmt] = len(data) / 2 / 24000
        else:
            samples, rate = soundfile.read(io.BytesIO(data))
            durations[fmt] = len(samples) / rate
    assert max(durations.values()) - min(durations.values()) < 0.05, durations
    # One synthesis; the other five formats were encoded from its master.
    assert server.metric("ttsd_syntheses_total") - syntheses_before == 1


def test_formats_requested_together_share_one_synthesis(server: Server, client: httpx.Client) -> None:
    text = unique("Two formats at once, one synthesis.")
    before = server.metric("ttsd_syntheses_total")
    ids = [
        client.post("/v1/synthesize", json={"text": text, "format": f}).json()["task_id"]
        for f in ("wav", "ogg")
    ]
    assert all(server.wait_task(i)["status"] == "done" for i in ids)
    assert server.metric("ttsd_syntheses_total") - before == 1


def test_audio_is_cacheable(server: Server, client: httpx.Client) -> None:
    task = client.post("/v1/synthesize", json={"text": unique("Cache me forever."), "format": "wav"}).json()
    url = server.wait_task(task["task_id"])["url"]
    api_url = f"/v1/audio/{server.links.audio_id(task['key'], 'wav')}"
    served = client.get(api_url)
    if server.mode == "distributed":
        # The API sends clients to object storage (or the CDN) rather than proxying the bytes.
        assert served.status_code == 302 and path_of(served.headers["location"]) == path_of(url)
    full = client.get(url, follow_redirects=True)
    assert full.status_code == 200
    assert "immutable" in full.headers["cache-control"]
    etag = full.headers["etag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    part = client.get(url, headers={"Range": "bytes=0-43"})
    assert part.status_code == 206 and part.content == full.content[:44]
    assert part.headers["content-range"] == f"bytes 0-43/{len(full.content)}"
    head = client.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(full.content))


def test_unknown_task_and_audio_are_404_json(client: httpx.Client) -> None:
    for path in (
        "/v1/tasks/" + "0" * 32,
        "/v1/tasks/../../etc",
        "/v1/audio/" + "0" * 64 + ".wav",
        "/v1/audio/..%2F..%2Fetc%2Fpasswd",
        "/v1/audio/" + "0" * 64 + ".exe",
        "/nowhere",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"].endswith("not_found")


def test_voices_catalogue(client: httpx.Client) -> None:
    body = client.get("/v1/voices").json()
    names = {v["name"] for v in body["voices"]}
    assert {"en-joe", "en-heart", "zh-female", "yue-female"} <= names
    assert {"en-US", "cmn", "yue"} <= set(body["languages"])
    assert body["default"] == "en-joe"
    aliases = {a for v in body["voices"] for a in v["aliases"]}
    assert aliases == {"alloy", "echo", "fable", "onyx", "nova", "shimmer"}
    assert all(v["sample_rate"] in (22050, 24000) for v in body["voices"])


def test_dialects_synthesize(server: Server, client: httpx.Client) -> None:
    for language, text in (
        ("cmn", "欢迎致电，请问有什么可以帮您？"),
        ("yue", "歡迎致電，請問有咩可以幫到你？"),
    ):
        response = client.post("/v1/synthesize", json={"text": unique(text), "language": language})
        done = server.wait_task(response.json()["task_id"])
        assert done["status"] == "done"
        samples, _ = soundfile.read(io.BytesIO(client.get(done["url"]).content))
        assert len(samples) > 22050


def test_health_readiness_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = client.get("/metrics")
    assert "ttsd_cache_requests_total" in metrics.text and "ttsd_busy_slots" in metrics.text


def test_openapi_schema_is_served(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/v1/synthesize", "/v1/tasks/{task_id}", "/v1/audio/{audio_id}", "/v1/audio/speech"} <= set(
        schema["paths"]
    )


def test_idempotency_key(client: httpx.Client) -> None:
    key = {"Idempotency-Key": f"order-{unique('k')}"}
    body = {"text": unique("Idempotent request."), "format": "ogg"}
    first = client.post("/v1/synthesize", json=body, headers=key)
    again = client.post("/v1/synthesize", json=body, headers=key)
    assert first.status_code == 202 and again.status_code in (200, 202)
    if again.status_code == 202:
        assert again.json()["task_id"] == first.json()["task_id"]
    other = client.post("/v1/synthesize", json={**body, "text": "Something else."}, headers=key)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_conflict"
    too_long = client.post("/v1/synthesize", json=body, headers={"Idempotency-Key": "x" * 300})
    assert too_long.status_code == 422
