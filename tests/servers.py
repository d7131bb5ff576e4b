"""Real ``ttsd serve`` processes on free ports, each in a temporary directory, and the waits the
tests make on them (and on anything else: ``wait_for``, ``wait_until``, a clock that can step)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ttsd.links import SECRET_FILE, Links


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    mode: str = "embedded"
    url_secret: str | None = None  # TTSD_URL_SECRET, when the server was given one

    @property
    def links(self) -> Links:
        """What names this server's audio, tasks and objects: its secret, or the one embedded mode
        made in its data directory."""
        secret = self.url_secret or (self.data_dir / SECRET_FILE).read_text().strip()
        return Links(secret.encode())

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample over the series matching ``labels``."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"^{re.escape(name)}(?:{{(.*)}})? (\S+)$", line)
            if not match:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(2))
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines (TTSD_LOG_FORMAT=json), parsed."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith('{"ts"')]

    def failures_logged(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("status") == 500 or e.get("level") == "error"]

    def wait_idle(self, timeout: float = 120) -> None:
        """Until no job is queued, in a slot or being stored: counters read after it belong to
        what the caller does next, not to an earlier test's jobs finishing."""

        def idle() -> bool:
            stats = httpx.get(f"{self.url}/v1/stats", timeout=10).json()
            return not any(stats.get(k) for k in ("queue_depth", "busy_slots", "post_backlog"))

        wait_until(idle, timeout, "the server to be idle")

    def wait_task(self, task_id: str, timeout: float = 120, key: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client(headers={"X-API-Key": key} if key else None) as client:
            while time.monotonic() < deadline:
                body: dict[str, Any] = client.get(f"/v1/tasks/{task_id}").json()
                if body["status"] in ("done", "failed"):
                    return body
                time.sleep(0.05)
        raise AssertionError(f"task {task_id} did not finish in {timeout} s")


T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None],
    *,
    timeout: float,
    message: str | Callable[[], str],
    interval: float = 0.05,
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """Poll ``check`` until it returns something truthy, and return that. A deadline instead of a
    sleep: a fast machine goes on at once, a loaded one gets the whole ``timeout`` before the test
    fails with ``message`` (a callable is called then, so it can show what was last seen).
    ``retry_on``: exceptions that mean "not yet" (a log line read while half written)."""
    deadline = time.monotonic() + timeout
    while True:
        result: T | None = None
        with contextlib.suppress(*retry_on):
            result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (waited {timeout:g} s)")
        time.sleep(interval)


class Clock:
    """Stands in for the ``time`` module of the code under test, so a test moves time itself and
    checks a TTL or a window on both sides of its edge instead of sleeping past it (which a loaded
    machine can overshoot, and which cannot tell "expired" from "never there"). It starts at a round
    number: moved by powers of two, it meets each edge exactly."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.stepped = 0.0  # how far the wall clock was set forward, which monotonic time never is

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now - self.stepped

    def step(self, seconds: float) -> None:
        """The wall clock set forward (an NTP step, a virtual machine resumed); time did not pass."""
        self.now += seconds
        self.stepped += seconds

    @classmethod
    def replacing_time(cls, monkeypatch: pytest.MonkeyPatch, user: Any) -> Clock:
        """A clock in place of ``time`` in the module that defines ``user`` (wherever it moves)."""
        clock = cls()
        monkeypatch.setattr(sys.modules[user.__module__], "time", clock)
        return clock


def wait_until(check: Any, timeout: float, what: str) -> None:
    """A service is up: ``check`` is true, and a refused connection only means "not yet"."""
    refused = (OSError, httpx.TransportError)
    wait_for(check, timeout=timeout, message=f"{what} not up", interval=0.1, retry_on=refused)


def base_env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TTSD_DATA_DIR": str(tmp / "data"),
        "TTSD_ENGINE_SLOTS": "2",
        # The three engines that always install: a test that wants the neural Mandarin voice
        # (TensorFlow in every engine process, seconds to load) says so.
        "TTSD_ENGINES": "piper,hibari,espeak",
        "TTSD_LOG_FORMAT": "json",
        # onnxruntime writes telemetry under ~/.cache; keep the tests' homes out of the user's.
        "HOME": str(tmp / "home"),
    }


def start_server(
    tmp: Path, *, env: dict[str, str] | None = None, ready: bool = True, name: str = "server"
) -> Server:
    port = free_port()
    data_dir = tmp / "data"
    log_path = tmp / f"{name}.log"
    full_env = {**base_env(tmp), **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ttsd.cli", "serve", "--port", str(port)],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    mode = "distributed" if full_env.get("TTSD_QUEUE") == "celery" else "embedded"
    server = Server(
        f"http://127.0.0.1:{port}", process, data_dir, log_path, mode, full_env.get("TTSD_URL_SECRET")
    )
    deadline = time.monotonic() + 120
    path = "/readyz" if ready else "/healthz"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            answer = httpx.get(server.url + path, timeout=2)
            # Ready means every engine's pool: /readyz answers 200 as soon as one of them is.
            if answer.status_code == 200 and not answer.json().get("unavailable"):
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise AssertionError(f"server not ready in time:\n{server.log()}")


def terminate(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_server(server: Server) -> None:
    terminate(server.process)
