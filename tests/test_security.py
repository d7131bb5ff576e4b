"""API keys and rate limits, in both modes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from websockets.sync.client import connect

from .conftest import unique
from .servers import Server, start_server, stop_server

KEYS = "k1-secret-abcdef,k2-secret-uvwxyz"
# Used by test_rate_limit_per_key alone, so their buckets are full when it starts: no other test
# spends their tokens, and waiting for a bucket to refill would be waiting on the clock.
RATE_KEYS = ("k3-secret-ratea1", "k4-secret-rateb2")


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def secured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"TTSD_API_KEYS": ",".join([KEYS, *RATE_KEYS]), "TTSD_RATE_LIMIT": "2", "TTSD_RATE_BURST": "3"}
    if request.param == "embedded":
        srv = start_server(tmp_path_factory.mktemp("secured"), env=env)
    else:
        srv = request.getfixturevalue("stack").server("api-secured", env=env)
    yield srv
    stop_server(srv)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_required_and_checked(secured: Server) -> None:
    body = {"text": unique("Keys please.")}
    with secured.client() as client:
        missing = client.post("/v1/synthesize", json=body)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert client.post("/v1/synthesize", json=body, headers=bearer("k1-secret-abcdeX")).status_code == 401
        assert client.get("/v1/voices").status_code == 401
        assert client.get(f"/v1/tasks/{'0' * 32}").status_code == 401
        ok = client.post("/v1/synthesize", json=body, headers=bearer("k1-secret-abcdef"))
        assert ok.status_code == 202
        assert client.get("/v1/voices", headers={"X-API-Key": "k2-secret-uvwxyz"}).status_code == 200
        done = secured.client(headers=bearer("k1-secret-abcdef")).get(f"/v1/tasks/{ok.json()['task_id']}")
        assert done.status_code == 200
        # Liveness and audio links need no key.
        assert client.get("/healthz").status_code == 200
    assert "k1-secret" not in secured.log() and "k2-secret" not in secured.log()


def test_websocket_needs_a_key(secured: Server) -> None:
    url = secured.url.replace("http://", "ws://") + "/v1/stream"
    with connect(url, open_timeout=10) as ws:
        event = json.loads(ws.recv(timeout=10))
        assert event["event"] == "error" and event["error"]["code"] == "unauthorized"
    with connect(url + "?api_key=k2-secret-uvwxyz", open_timeout=10) as ws:
        ws.send(json.dumps({"text": unique("Authorised socket."), "voice": "en-heart"}))
        assert isinstance(ws.recv(timeout=60), bytes)


def test_rate_limit_per_key(secured: Server) -> None:
    first_key, other_key = RATE_KEYS

    def burst(key: str) -> list[httpx.Response]:
        with secured.client(headers=bearer(key)) as client, ThreadPoolExecutor(6) as pool:
            return list(
                pool.map(
                    lambda i: client.post(
                        "/v1/synthesize", json={"text": unique(f"Rate {i}."), "voice": "en-heart"}
                    ),
                    range(6),
                )
            )

    first = burst(first_key)
    codes = sorted(r.status_code for r in first)
    assert codes.count(202) == 3 and codes.count(429) == 3, codes
    for r in first:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limited"
            assert int(r.headers["retry-after"]) >= 1
            assert r.headers["ratelimit-limit"] == "2" and r.headers["ratelimit-remaining"] == "0"
    # Another key has its own bucket; the first one refills at the configured rate.
    assert sorted(r.status_code for r in burst(other_key)).count(202) == 3
    with secured.client(headers=bearer(first_key)) as client:

        def post() -> httpx.Response:
            return client.post("/v1/synthesize", json={"text": unique("Refilled.")})

        # Whatever the first key regained while the other burst ran is spent first: after a refusal
        # its bucket holds less than one token.
        for _ in range(10):
            emptied_at = time.monotonic()  # the refusal comes after this instant
            answer = post()
            if answer.status_code == 429:
                break
            assert answer.status_code == 202, answer.text
        else:
            raise AssertionError("the first key was never refused again")
        # Then two admissions: the bucket needs at least one whole token more, which at 2 a second
        # takes half a second. A slow machine only makes that longer, so the lower bound cannot fail
        # by luck; the deadline only bounds a bucket that never refills.
        admitted = 0
        deadline = emptied_at + 10
        while admitted < 2:
            answer = post()
            if answer.status_code == 202:
                admitted += 1
                continue
            assert answer.status_code == 429 and answer.json()["error"]["code"] == "rate_limited", answer.text
            assert time.monotonic() < deadline, f"the bucket refilled {admitted} token(s) in 10 s, not 2"
            time.sleep(0.05)
        refilled_in = time.monotonic() - emptied_at
        assert refilled_in >= 0.5, (
            f"two requests admitted {refilled_in:.2f} s after a refusal: over 2 per second"
        )


def test_warning_when_exposed_without_keys() -> None:
    code = (
        "from ttsd.api.app import create_app; from ttsd.config import Settings; "
        "create_app(Settings(host='0.0.0.0'))"
    )
    exposed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "SECURITY" in exposed.stderr and "TTSD_API_KEYS" in exposed.stderr
    code = code.replace("host='0.0.0.0'", "host='127.0.0.1'")
    assert (
        "SECURITY" not in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr
    )
