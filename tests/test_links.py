"""Capability links: audio URLs, task ids and object names nobody can compute from a guessed text."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from ttsd.config import Settings
from ttsd.errors import ConfigError
from ttsd.links import SECRET_FILE, Links, url_secret
from ttsd.store.base import object_name, parse_object_name

from .conftest import unique
from .servers import Server, base_env, start_server, stop_server
from .stack import Stack

KEY = "ab" * 32
LINKS = Links(b"a secret for the tests")


def test_names_carry_a_digest_only_the_secret_makes() -> None:
    other = Links(b"another secret for the tests")
    audio = LINKS.audio_id(KEY, "mp3")
    assert audio.startswith(f"{KEY}-") and audio.endswith(".mp3")
    assert LINKS.parse_audio_id(audio) == (KEY, "mp3")
    assert other.parse_audio_id(audio) is None
    assert LINKS.task_id(KEY, "mp3") != other.task_id(KEY, "mp3")
    assert LINKS.task_id(KEY, "mp3") != LINKS.task_id(KEY, "wav")
    # The scheme before capability links: computable by anyone from the text.
    assert LINKS.task_id(KEY, "mp3") != hashlib.sha256(f"{KEY}:mp3".encode()).hexdigest()[:32]


@pytest.mark.parametrize(
    "forged",
    [
        f"{KEY}.mp3",  # a bare key, as links were before
        f"{KEY}-{'0' * 32}.mp3",
        f"{KEY}-{LINKS.audio_id(KEY, 'mp3')[65:97]}.wav",  # another format's name with this tag
        f"{KEY}-{LINKS.audio_id(KEY, 'mp3')[65:96]}.mp3",  # a tag cut short
        f"{KEY[:-1]}-{LINKS.audio_id(KEY, 'mp3')[65:97]}.mp3",
        "",
        "-.",
        f"{KEY}-{LINKS.audio_id(KEY, 'mp3')[65:97]}.m/p3",
    ],
)
def test_a_forged_or_stale_audio_id_is_nobody(forged: str) -> None:
    assert LINKS.parse_audio_id(forged) is None


def test_object_names_keep_the_key_apart_from_the_tag() -> None:
    tagged = object_name(KEY, "mp3", LINKS.object_tag(KEY))
    assert tagged == f"ab/{KEY}-{LINKS.object_tag(KEY)}/audio.mp3"
    assert parse_object_name(tagged) == (KEY, "mp3")
    assert parse_object_name(object_name(KEY, "piece")) == (KEY, "piece")  # stored before tags


def test_object_names_carry_their_contents_digest() -> None:
    named = object_name(KEY, "piece", LINKS.object_tag(KEY), "0123456789abcdef")
    assert named == f"ab/{KEY}-{LINKS.object_tag(KEY)}/piece-0123456789abcdef.pcm"
    assert parse_object_name(named) == (KEY, "piece")
    assert parse_object_name(object_name(KEY, "mp3", "", "fedcba9876543210")) == (KEY, "mp3")
    assert parse_object_name(object_name(KEY, "master", "t", "ff")) == (KEY, "master")


def test_embedded_mode_makes_its_secret_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    made: list[bytes] = []
    threads = [threading.Thread(target=lambda: made.append(url_secret(settings))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 1 and len(made[0]) == 64  # processes starting together agree
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert url_secret(settings) == made[0]
    assert sorted(p.name for p in path.parent.iterdir()) == [SECRET_FILE]  # no temporary left


def test_a_given_secret_wins_and_must_not_be_short(tmp_path: Path) -> None:
    given = Settings(data_dir=tmp_path, url_secret="a secret given by the operator")
    assert url_secret(given) == b"a secret given by the operator"
    assert not (tmp_path / SECRET_FILE).exists()
    with pytest.raises(ConfigError, match="at least 16"):
        url_secret(Settings(data_dir=tmp_path, url_secret="short"))
    (tmp_path / SECRET_FILE).write_text("\n")
    with pytest.raises(ConfigError, match="no usable secret"):
        url_secret(Settings(data_dir=tmp_path))


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_distributed_mode_does_not_start_without_a_shared_secret(command: str, tmp_path: Path) -> None:
    env = {**base_env(tmp_path), "TTSD_QUEUE": "celery", "TTSD_ENGINES": "espeak"}
    env.pop("TTSD_URL_SECRET", None)
    done = subprocess.run(
        [sys.executable, "-m", "ttsd.cli", command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "TTSD_URL_SECRET" in done.stderr


def _made(server: Server, text: str, fmt: str = "mp3") -> dict[str, object]:
    with server.client() as client:
        queued = client.post("/v1/synthesize", json={"text": text, "format": fmt, "voice": "en-us-female"})
        assert queued.status_code == 202, queued.text
        return server.wait_task(queued.json()["task_id"])


def test_a_link_computed_from_the_text_finds_nothing(server: Server) -> None:
    done = _made(server, unique("Mr Zhang, your card ending 4321 has been blocked."))
    key = str(done["key"])
    with server.client() as client:
        assert client.get(str(done["url"]), follow_redirects=True).status_code == 200
        for guessed in (f"/v1/audio/{key}.mp3", f"/v1/audio/{key}-{'0' * 32}.mp3"):
            answer = client.get(guessed)
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "audio_not_found"
        old_task_id = hashlib.sha256(f"{key}:mp3".encode()).hexdigest()[:32]
        assert client.get(f"/v1/tasks/{old_task_id}").status_code == 404
        assert client.get(f"/v1/tasks/{done['task_id']}").status_code == 200


def test_objects_are_stored_under_names_nobody_can_compute(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"TTSD_ENGINES": "espeak"})
    try:
        done = _made(server, unique("A name in the bucket."))
        key = str(done["key"])
        folders = [p.name for p in (server.data_dir / "audio" / key[:2]).iterdir() if key in p.name]
        assert folders == [f"{key}-{server.links.object_tag(key)}"]
    finally:
        stop_server(server)


def test_a_new_secret_invalidates_links_not_audio(tmp_path: Path) -> None:
    """An operator rotates TTSD_URL_SECRET: links and task ids handed out before stop working;
    the audio is still cached, and asking again hands out a new link without synthesizing."""
    env = {"TTSD_ENGINES": "espeak", "TTSD_URL_SECRET": "the first secret of this deployment"}
    text = unique("Your refund has been processed.")
    server = start_server(tmp_path, env=env)
    try:
        done = _made(server, text)
    finally:
        stop_server(server)
    server = start_server(tmp_path, env={**env, "TTSD_URL_SECRET": "the second secret, after rotation"})
    try:
        with server.client() as client:
            # The old link, at this server (the one that gave it is gone).
            assert client.get(httpx.URL(str(done["url"])).path).status_code == 404
            assert client.get(f"/v1/tasks/{done['task_id']}").status_code == 404
            body = {"text": text, "format": "mp3", "voice": "en-us-female"}
            again = client.post("/v1/synthesize", json=body)
            assert again.status_code == 200 and again.json()["cached"], again.text
            assert again.json()["url"] != done["url"]
            audio = client.get(httpx.URL(again.json()["url"]).path)
            assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
        assert server.metric("ttsd_syntheses_total") == 0
    finally:
        stop_server(server)


def test_during_a_rolling_rotation_a_task_links_the_object_its_worker_stored(stack: Stack) -> None:
    """The APIs already have the new secret, a worker still the old one: the object is stored
    under the worker's name for it, and a finished task's presigned URL (and a poll with the old
    task id, which the old secret made) follows what the index recorded, not what the API's own
    secret would name."""
    api = stack.server(
        name="rotated-api", env={"TTSD_URL_SECRET": "the new secret, rolled out to the APIs first"}
    )
    try:
        text = unique("Your parcel is at the depot.")
        with api.client() as client:
            queued = client.post("/v1/synthesize", json={"text": text, "format": "mp3", "voice": "en-joe"})
            assert queued.status_code == 202, queued.text
        done = api.wait_task(queued.json()["task_id"])
        assert done["status"] == "done", done
        audio = httpx.get(str(done["url"]), follow_redirects=True, timeout=30)
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
        # The shared API (old secret) does not answer for the task id the new secret made.
        old = stack.server(name="old-api")
        try:
            with old.client() as client:
                assert client.get(f"/v1/tasks/{done['task_id']}").status_code == 404
        finally:
            stop_server(old)
    finally:
        stop_server(api)
