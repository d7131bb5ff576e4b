"""The hot paths (api/hot.py) answer cache hits, task polls and audio files without FastAPI's
routing; they must answer exactly as the framework path does, with the same keys, rate limits,
metrics and access log; and both HTTP servers serve them. What hits keep between requests:
``test_hit_state``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import unique
from .servers import Server, start_server, stop_server, wait_for
from .test_bad_input import CASES

KEY = "hot-key-123456"
# One secret for both servers of the pair, so that their links are alike too.
ENV = {
    "TTSD_ENGINES": "piper",
    "TTSD_ENGINE_SLOTS": "1",
    "TTSD_API_KEYS": KEY,
    "TTSD_URL_SECRET": "the pair's secret",
}
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """The same service twice: hot paths on (the default) and off."""
    hot = start_server(tmp_path_factory.mktemp("hot"), env=ENV)
    try:
        framework = start_server(tmp_path_factory.mktemp("framework"), env={**ENV, "TTSD_HOT_PATHS": "false"})
        try:
            yield hot, framework
        finally:
            stop_server(framework)
    finally:
        stop_server(hot)


def _answer(server: Server, method: str, path: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    response = httpx.request(method, server.url + path, timeout=60, **kwargs)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.content
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "x-request-id", "server")}
    return response.status_code, body, headers


def _without_base(value: Any, server: Server) -> Any:
    return (
        json.loads(json.dumps(value).replace(server.url, "BASE")) if not isinstance(value, bytes) else value
    )


def _alike(
    pair: tuple[Server, Server], method: str, path: str, ignore: tuple[str, ...] = (), **kwargs: Any
) -> tuple[int, Any]:
    """Both servers' answers to the same request, which must be the same (but for ``ignore``d
    fields: Piper's noise is not seedable, so durations differ by a few milliseconds)."""
    hot, framework = pair
    a = _answer(hot, method, path, **kwargs)
    b = _answer(framework, method, path, **kwargs)
    for body in (a[1], b[1]):
        for name in ignore:
            body.pop(name, None)
    assert a[0] == b[0], (path, kwargs, a, b)
    if isinstance(a[1], bytes):  # audio: Piper's noise is not seedable, so only its kind must match
        assert a[2]["content-type"] == b[2]["content-type"]
    else:
        assert _without_base(a[1], hot) == _without_base(b[1], framework), (path, kwargs)
    if a[0] >= 400:
        assert a[2].get("retry-after") == b[2].get("retry-after")
        assert a[2].get("www-authenticate") == b[2].get("www-authenticate")
    return a[0], a[1]


def _synthesized(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    with server.client(headers=AUTH) as client:
        first = client.post("/v1/synthesize", json=body).json()
        deadline = time.monotonic() + 120
        while first["status"] != "done" and time.monotonic() < deadline:
            time.sleep(0.05)
            first = client.get(f"/v1/tasks/{first['task_id']}").json()
        done: dict[str, Any] = client.post("/v1/synthesize", json=body).json()
    return done


@pytest.mark.parametrize(("name", "body", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_hostile_bodies_get_the_frameworks_answer(
    pair: tuple[Server, Server], name: str, body: bytes | str, status: int, code: str | None
) -> None:
    headers = {"content-type": "application/json", **AUTH}
    got, answer = _alike(pair, "POST", "/v1/synthesize", content=body, headers=headers)
    assert got == status and (code is None or answer["error"]["code"] == code)
    speech = (
        body.replace('"text"', '"input"') if isinstance(body, str) else body.replace(b'"text"', b'"input"')
    )
    _alike(pair, "POST", "/v1/audio/speech", content=speech, headers=headers)


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/v1/synthesize", {"json": {"text": "Hot and cold."}}),  # no key
        ("POST", "/v1/synthesize", {"json": {"text": "Hot and cold."}, "headers": {"X-API-Key": "wrong"}}),
        (
            "POST",
            "/v1/synthesize",
            {"json": {"text": "Hot."}, "headers": {**AUTH, "content-type": "text/plain"}},
        ),
        ("POST", "/v1/synthesize?redirect=maybe", {"json": {"text": "Hot."}, "headers": AUTH}),
        ("POST", "/v1/audio/speech", {"json": {"input": "Hot."}, "headers": {"X-API-Key": "nope"}}),
        ("GET", "/v1/tasks/" + "0" * 32, {"headers": AUTH}),
        ("GET", "/v1/tasks/" + "0" * 32, {}),
        ("GET", "/v1/tasks/not-a-task", {"headers": AUTH}),
        ("GET", "/v1/tasks/%00", {"headers": AUTH}),
        ("GET", "/v1/audio/" + "0" * 64 + ".mp3", {}),
        ("HEAD", "/v1/audio/" + "0" * 64 + ".mp3", {}),
        ("GET", "/v1/audio/" + "0" * 64 + ".exe", {}),
        ("GET", "/v1/audio/speech", {}),
        ("GET", "/v1/audio/a/b", {}),
        ("PUT", "/v1/synthesize", {"headers": AUTH}),
    ],
)
def test_errors_get_the_frameworks_answer(
    pair: tuple[Server, Server], method: str, path: str, kwargs: dict[str, Any]
) -> None:
    status, _ = _alike(pair, method, path, **kwargs)
    assert status >= 400


def test_hits_polls_and_files_answer_alike(pair: tuple[Server, Server]) -> None:
    body = {"text": "The hot path answers this one.", "format": "mp3"}
    done = [_synthesized(server, body) for server in pair]
    assert done[0]["key"] == done[1]["key"]  # same text, same engine: same key
    _alike(pair, "POST", "/v1/synthesize", ignore=("duration",), json=body, headers=AUTH)
    status, hit = _alike(
        pair, "POST", "/v1/synthesize?redirect=false", ignore=("duration",), json=body, headers=AUTH
    )
    assert status == 200 and hit["cached"] is True
    path = httpx.URL(done[0]["url"]).path
    for headers in ({}, {"Range": "bytes=0-99"}, {"If-None-Match": '"nope"'}):
        hot = httpx.get(pair[0].url + path, headers=headers)
        framework = httpx.get(pair[1].url + path, headers=headers)
        assert hot.status_code == framework.status_code and hot.status_code in (200, 206)
        for name in ("cache-control", "content-type", "accept-ranges", "content-disposition"):
            assert hot.headers[name] == framework.headers[name], name
        assert hot.headers["etag"] and hot.headers["content-length"] == str(len(hot.content))
    etag = httpx.get(pair[0].url + path).headers["etag"]
    assert httpx.get(pair[0].url + path, headers={"If-None-Match": etag}).status_code == 304
    head = httpx.head(pair[0].url + path)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 1000
    # OpenAI's route: a hit is the stored file, whole, with its length.
    speech = {"input": body["text"], "response_format": "mp3"}
    answers = [httpx.post(s.url + "/v1/audio/speech", json=speech, headers=AUTH, timeout=60) for s in pair]
    assert answers[0].headers["x-cache"] == answers[1].headers["x-cache"] == "hit"
    for server, answer, made in zip(pair, answers, done, strict=True):
        assert answer.content == httpx.get(server.url + httpx.URL(made["url"]).path).content
    assert answers[0].headers["content-length"] == str(len(answers[0].content))
    # A finished task, polled.
    with pair[0].client(headers=AUTH) as client:
        task_id = client.post("/v1/synthesize", json={**body, "format": "wav"}).json()["task_id"]
        _synthesized(pair[0], {**body, "format": "wav"})
        polled = client.get(f"/v1/tasks/{task_id}").json()
    assert polled["status"] == "done" and polled["url"].endswith(".wav") and polled["progress"] == 100


def test_hits_are_metered_logged_and_rate_limited(tmp_path: Path) -> None:
    env = {**ENV, "TTSD_LOG_FORMAT": "json", "TTSD_RATE_LIMIT": "0.25", "TTSD_RATE_BURST": "4"}
    server = start_server(tmp_path, env=env)
    try:
        body = {"text": unique("Metered and logged.")}
        _synthesized(server, body)  # two tokens
        before = server.metric("ttsd_http_requests_total", route="/v1/synthesize", status="200")
        hits_before = server.metric("ttsd_cache_requests_total", result="hit")
        with server.client(headers=AUTH) as client:
            hit = client.post("/v1/synthesize", json=body, headers={"X-Request-Id": "hot-hit-1"})
            assert hit.status_code == 200 and hit.headers["x-request-id"] == "hot-hit-1"
            limited = [client.post("/v1/synthesize", json=body) for _ in range(3)][-1]
            assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
            assert int(limited.headers["retry-after"]) >= 1 and limited.headers["ratelimit-limit"] == "0.25"
            # Polls and files are not rate limited; polls still need the key.
            assert client.get("/v1/tasks/" + "0" * 32).status_code == 404
        assert httpx.get(f"{server.url}/v1/tasks/" + "0" * 32).status_code == 401
        after = server.metric("ttsd_http_requests_total", route="/v1/synthesize", status="200")
        assert after - before == 2  # the hit and the one more the bucket allowed
        assert server.metric("ttsd_http_requests_total", route="/v1/synthesize", status="429") >= 1
        assert server.metric("ttsd_cache_requests_total", result="hit") - hits_before == 2
        assert server.metric("ttsd_http_request_seconds_count", route="/v1/tasks/{task_id}") >= 2
        # The access log is written in batches. A request made after the hit was counted (the counter
        # moves in the same step that queues its line) is logged after it: once its line is in the
        # file, so is every line of the hit, and counting them below sees them all.
        httpx.get(f"{server.url}/v1/tasks/{'0' * 32}", headers={**AUTH, "X-Request-Id": "hot-after-1"})
        wait_for(
            lambda: any(e.get("request_id") == "hot-after-1" for e in server.events()),
            timeout=10,
            retry_on=(ValueError,),  # a line read while it was being written
            message="the access log never caught up with a request made after the hit",
        )
        logged = [e for e in server.events() if e.get("request_id") == "hot-hit-1"]
        assert len(logged) == 1
        line = logged[0]
        assert line["event"] == "request" and line["logger"] == "ttsd.access" and line["level"] == "info"
        assert line["route"] == "/v1/synthesize" and line["method"] == "POST" and line["status"] == 200
        assert (
            line["cache"] == "hit"
            and line["key"] == hit.json()["key"]
            and line["text_length"] == len(body["text"])
        )
        assert isinstance(line["latency_ms"], float)
        assert body["text"] not in server.log() and KEY not in server.log()
    finally:
        stop_server(server)


def test_an_entry_purged_by_another_process_is_forgotten_within_a_second(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={**ENV, "TTSD_RECENT_REVALIDATE": "0.5"})
    try:
        body = {"text": unique("Purged from under the API.")}
        _synthesized(server, body)
        # The API last read the entry from the index during _synthesized, before this instant; it may
        # serve it from memory for twice TTSD_RECENT_REVALIDATE after that read, no longer.
        remembered_until = time.monotonic() + 1.0
        subprocess.run(
            [sys.executable, "-m", "ttsd.cli", "cache", "purge", "--all"],
            env={"TTSD_DATA_DIR": str(server.data_dir), "PATH": "/usr/bin:/bin"},
            check=True,
            capture_output=True,
        )
        # Asked until it misses. Only a request sent inside that second may still be a hit, so the
        # outcome no longer depends on how long the purge or the requests take.
        with server.client(headers=AUTH) as client:
            while True:
                sent = time.monotonic()
                again = client.post("/v1/synthesize", json=body)
                if again.status_code != 200:
                    break
                # 10 ms: how far the server's clock and ours may drift apart in a second, and more.
                assert sent < remembered_until + 0.01, f"still a hit {sent - remembered_until:.3f} s too late"
                time.sleep(0.05)
        assert again.status_code == 202, again.text  # a miss: the API no longer remembers the entry
    finally:
        stop_server(server)


def test_uvicorn_still_serves(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={**ENV, "TTSD_SERVER": "uvicorn"})
    try:
        done = _synthesized(server, {"text": unique("Served by uvicorn.")})
        audio = httpx.get(done["url"], headers={"Range": "bytes=0-9"})
        assert audio.status_code == 206 and len(audio.content) == 10
        assert httpx.get(server.url + "/healthz").headers["server"] == "uvicorn"
    finally:
        stop_server(server)
