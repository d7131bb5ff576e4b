"""schemathesis against the service's own OpenAPI schema: no 5xx, responses as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .servers import start_server, stop_server


@pytest.mark.slow
def test_openapi_contract(tmp_path: Path) -> None:
    # eSpeak only: schemathesis sends many valid texts, and each one is a real synthesis. With a
    # key, as production runs, so the keyed routes (/v1/stats too) are explored behind it.
    env = {
        "TTSD_ENGINES": "espeak",
        "TTSD_DEFAULT_VOICE": "en-us-female",
        "TTSD_ENGINE_SLOTS": "1",
        "TTSD_API_KEYS": "contract:contract-key",
    }
    srv = start_server(tmp_path, env=env)
    try:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{srv.url}/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance,content_type_conformance",
                "--max-examples",
                "40",
                # One worker: with two, CPython 3.11 sometimes trips over hypothesis parsing lambda
                # sources on two threads at once ("AST constructor recursion depth mismatch").
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--generation-deterministic",
                "--no-color",
                "--header",
                "Authorization: Bearer contract-key",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        stop_server(srv)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    (tmp_path / "schemathesis.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, report
    assert srv.events() and not srv.failures_logged()
