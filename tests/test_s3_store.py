"""The S3 store's credentials: given, or boto3's chain walked at first use (not at start-up)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from ttsd.config import Settings
from ttsd.errors import AudioNotFound, StorageError

NAME = "ab/" + "cd" * 32 + "/audio.wav"


class _Metadata(BaseHTTPRequestHandler):
    """An instance-metadata service that knows no role: it records who asked."""

    asked: list[str]

    def _nothing(self) -> None:
        self.asked.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = _nothing

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def boto3_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """boto3's chain with nothing in it but an instance-metadata service on this machine."""
    asked: list[str] = []
    handler = type("Metadata", (_Metadata,), {"asked": asked})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{server.server_port}/")
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    yield asked
    server.shutdown()


def test_start_up_asks_no_credential_source_and_first_use_does(boto3_sources: list[str]) -> None:
    from ttsd.store.s3 import S3Store

    store = S3Store(Settings(storage="s3", s3_endpoint_url="http://127.0.0.1:9"))
    assert boto3_sources == []  # an API or worker outside a cloud starts without waiting on it
    with pytest.raises(StorageError, match="no S3 credentials"):
        store.put(NAME, b"RIFF", "audio/wav")
    assert any("/latest/" in asked for asked in boto3_sources)  # asked when first used
    with pytest.raises(StorageError, match="reach the bucket"):
        store.check()


def test_credentials_from_boto3s_sources_reach_the_bucket(
    stack: Any, boto3_sources: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ttsd.store.s3 import S3Store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", stack.env["TTSD_S3_ACCESS_KEY"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", stack.env["TTSD_S3_SECRET_KEY"])
    store = S3Store(
        Settings(
            storage="s3",
            s3_endpoint_url=stack.s3.url,
            s3_bucket=stack.env["TTSD_S3_BUCKET"],
            s3_create_bucket=True,
        )
    )
    store.check()
    store.put(NAME, b"RIFF and the rest", "audio/wav")
    assert store.get(NAME, (5, 3)) == b"and"
    assert httpx.get(store.locate(NAME).url).content == b"RIFF and the rest"
    store.delete(NAME)
    assert not store.exists(NAME) and boto3_sources == []
    # A missing object is a miss (the sentence is made again, the client gets a 404), not a fault.
    with pytest.raises(AudioNotFound):
        store.get(NAME)
    with pytest.raises(AudioNotFound):
        store.get(NAME, (5, 3))
