"""Tenants: named keys (or their SHA-256), their own rate limits, a cache scope per tenant, the
surfaces a key guards, and failed keys limited per address."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from ttsd.errors import ConfigError
from ttsd.tenants import Tenants

from .conftest import unique
from .servers import Server, start_server, stop_server

ACME, GLOBEX, SLOW = "acme-key-0001-secret", "globex-key-0002-secret", "slow-key-0003-secret"
KEYS = json.dumps(
    [
        {"name": "acme", "key": ACME},
        {"name": "globex", "sha256": hashlib.sha256(GLOBEX.encode()).hexdigest()},
        {"name": "slow", "key": SLOW, "rate_limit": 0.01, "burst": 1},
    ]
)
VOICE = "en-us-female"  # eSpeak: fast


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_may_be_named_or_given_as_digests() -> None:
    digest = hashlib.sha256(b"k2").hexdigest()
    tenants = Tenants.parse(["acme:k1", f"globex:sha256:{digest}", "k3", f"sha256:{'ab' * 32}"])
    assert tenants.names[:2] == ("acme", "globex")
    assert tenants.names[2] == f"key-{hashlib.sha256(b'k3').hexdigest()[:8]}"  # never the key
    found = tenants.match("k2")
    assert found is not None and found.name == "globex"
    assert tenants.match("k1") is not None and tenants.match("k4") is None
    # A key that only looks like a name (base64 padding, URL-ish) is still one key.
    assert Tenants.parse(["c2VjcmV0=="]).match("c2VjcmV0==") is not None
    rich = Tenants.parse([KEYS])
    slow = rich.match(SLOW)
    assert slow is not None and (slow.rate_limit, slow.burst) == (0.01, 1)


@pytest.mark.parametrize(
    "entries",
    [
        ["acme:k1", "acme:k2"],
        ["k1", "k1"],
        ['[{"name": "a"}]'],
        ['[{"key": "k", "sha256": "' + "ab" * 32 + '"}]'],
        ['[{"key": "k", "rate_limit": -1}]'],
        ['[{"key": "k", "colour": "red"}]'],
        ["[not json"],
        ["acme:sha256:abc"],
    ],
)
def test_bad_key_lists_are_refused_at_start(entries: list[str]) -> None:
    with pytest.raises(ConfigError):
        Tenants.parse(entries)


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def tenanted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"TTSD_API_KEYS": KEYS, "TTSD_CACHE_SCOPE": "tenant", "TTSD_AUTH_FAILURES": "1000"}
    if request.param == "embedded":
        srv = start_server(tmp_path_factory.mktemp("tenants"), env={**env, "TTSD_ENGINES": "espeak"})
    else:
        srv = request.getfixturevalue("stack").server("api-tenants", env=env)
    yield srv
    stop_server(srv)


def _synthesize(server: Server, key: str, text: str, **extra: str) -> httpx.Response:
    with server.client(headers=bearer(key)) as client:
        return client.post("/v1/synthesize", json={"text": text, "voice": VOICE, "format": "mp3"}, **extra)


def test_one_tenant_learns_nothing_of_another_tenants_speech(tenanted: Server) -> None:
    first, second = unique("Your card ending 4321 has been blocked."), unique("Please call us back.")
    made = _synthesize(tenanted, ACME, f"{first} {second}")
    assert made.status_code == 202
    # While acme's job is in flight: globex's same text is its own miss, not merged into it.
    during = _synthesize(tenanted, GLOBEX, f"{first} {second}")
    assert during.status_code == 202 and not during.json()["merged"], during.json()
    assert during.json()["task_id"] != made.json()["task_id"]
    assert during.json()["key"] != made.json()["key"]
    assert tenanted.wait_task(made.json()["task_id"], key=ACME)["status"] == "done"
    assert tenanted.wait_task(during.json()["task_id"], key=GLOBEX)["status"] == "done"
    # Once done: each tenant's text, and its sentences, are its own.
    third, fourth = unique("Your parcel is on its way."), unique("It arrives tomorrow.")
    made = _synthesize(tenanted, ACME, f"{third} {fourth}")
    assert tenanted.wait_task(made.json()["task_id"], key=ACME)["status"] == "done"
    assert _synthesize(tenanted, ACME, f"{third} {fourth}").json()["cached"]
    theirs = _synthesize(tenanted, GLOBEX, f"{fourth} {third}")  # acme's sentences, reordered
    assert theirs.status_code == 202 and theirs.json()["sentences_reused"] == 0, theirs.json()
    ours = _synthesize(tenanted, ACME, f"{fourth} {third}")
    assert ours.json()["sentences_reused"] == ours.json()["sentences"] >= 2, ours.json()


def test_idempotency_keys_are_the_tenants_own(tenanted: Server) -> None:
    key = {"Idempotency-Key": unique("order-1234")}
    assert _synthesize(tenanted, ACME, unique("One body."), headers=key).status_code == 202
    # Another tenant's same key with another body is no conflict: nothing says acme used it.
    assert _synthesize(tenanted, GLOBEX, unique("Another body."), headers=key).status_code == 202
    conflict = _synthesize(tenanted, ACME, unique("A third body."), headers=key)
    assert conflict.status_code == 422 and conflict.json()["error"]["code"] == "idempotency_conflict"


def test_a_tenant_has_its_own_rate_limit(tenanted: Server) -> None:
    codes = [_synthesize(tenanted, SLOW, unique("Slow tenant.")).status_code for _ in range(3)]
    assert codes[0] == 202 and codes[1:] == [429, 429], codes
    assert _synthesize(tenanted, ACME, unique("Others are not slowed.")).status_code == 202


def test_logs_metrics_and_stats_name_the_tenant_never_the_key(tenanted: Server) -> None:
    url = tenanted.url.replace("http://", "ws://") + f"/v1/stream?api_key={ACME}"
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"text": unique("A key in the query."), "voice": VOICE}))
        assert isinstance(ws.recv(timeout=60), bytes)
    with tenanted.client() as client:
        assert client.get(f"/v1/voices?api_key={GLOBEX}").status_code == 200
        stats = client.get("/v1/stats", headers=bearer(ACME)).json()
        assert stats["tenant_requests_total"]["acme"] >= 1 and "globex" in stats["tenant_requests_total"]
        assert 'ttsd_tenant_requests_total{tenant="acme"}' in client.get("/metrics").text
    log = tenanted.log()
    assert '"tenant": "acme"' in log or '"tenant":"acme"' in log
    for key in (ACME, GLOBEX, SLOW):
        assert key not in log


# Every route, what it needs: a key (True) or none (False), and why none.
SURFACES = [
    ("POST", "/v1/synthesize", True),
    ("POST", "/v1/audio/speech", True),
    ("GET", f"/v1/tasks/{'0' * 32}", True),
    ("GET", f"/v1/tasks/{'0' * 32}/events", True),
    ("GET", "/v1/voices", True),
    ("GET", "/v1/lexicons", True),
    ("GET", "/v1/stats", True),  # names the tenants
    ("GET", "/healthz", False),  # load balancers
    ("GET", "/readyz", False),
    ("GET", "/metrics", False),  # Prometheus on the private network; names tenants, not keys
    ("GET", "/", False),  # the playground page: static, asks for a key itself
    ("GET", f"/v1/audio/{'ab' * 32}-{'0' * 32}.mp3", False),  # capability links: 404, not 401
]


def test_the_surfaces_a_key_guards(tenanted: Server) -> None:
    body = {"text": "Surface.", "input": "Surface.", "voice": VOICE}
    with tenanted.client() as client:
        for method, path, keyed in SURFACES:
            answer = client.request(method, path, json=body if method == "POST" else None)
            assert (answer.status_code == 401) is keyed, (method, path, answer.status_code)
            if keyed:
                assert answer.json()["error"]["code"] == "unauthorized"
                with_key = client.request(
                    method, path, json=body if method == "POST" else None, headers=bearer(ACME)
                )
                assert with_key.status_code != 401, (method, path)


def test_failed_keys_are_limited_per_address(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, env={"TTSD_API_KEYS": f"acme:{ACME}", "TTSD_AUTH_FAILURES": "3", "TTSD_ENGINES": "espeak"}
    )
    try:
        with server.client() as client:
            codes = [client.get("/v1/voices", headers=bearer(f"guess-{i}")).status_code for i in range(5)]
            assert codes == [401, 401, 401, 429, 429], codes
            limited = client.get("/v1/voices", headers=bearer("guess-6"))
            assert limited.json()["error"]["code"] == "rate_limited"
            assert int(limited.headers["retry-after"]) >= 1
            # A right key is not held up by the wrong ones from its address.
            assert client.get("/v1/voices", headers=bearer(ACME)).status_code == 200
        assert server.metric("ttsd_auth_failures_total", outcome="limited") == 3
    finally:
        stop_server(server)


def test_warm_fills_one_tenants_cache(tmp_path: Path) -> None:
    """Under a per-tenant scope, ``ttsd warm --tenant`` pre-synthesizes into that tenant's cache
    alone: its requests are hits, another tenant's are its own misses."""
    env = {
        "TTSD_API_KEYS": KEYS,
        "TTSD_CACHE_SCOPE": "tenant",
        "TTSD_ENGINES": "espeak",
        "TTSD_DEFAULT_VOICE": VOICE,
        "TTSD_DATA_DIR": str(tmp_path / "data"),
        "HOME": str(tmp_path / "home"),
    }
    lines = tmp_path / "hot.txt"
    text = unique("Thank you for holding.")
    lines.write_text(text + "\n")
    cli = [sys.executable, "-m", "ttsd.cli", "warm", str(lines), "-f", "mp3"]
    refused = subprocess.run(
        [*cli, "--tenant", "nobody"], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "nobody" in refused.stderr
    shared = {**env, "TTSD_CACHE_SCOPE": "shared"}
    refused = subprocess.run(
        [*cli, "--tenant", "acme"], env={**os.environ, **shared}, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "TTSD_CACHE_SCOPE" in refused.stderr
    warmed = subprocess.run(
        [*cli, "--tenant", "acme"], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert warmed.returncode == 0, warmed.stderr
    server = start_server(tmp_path, env=env)
    try:
        assert _synthesize(server, ACME, text).status_code == 200
        assert _synthesize(server, GLOBEX, text).status_code == 202
    finally:
        stop_server(server)
