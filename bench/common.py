"""Shared bench plumbing: machine facts, the commit measured, a ttsd server in its own process."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, str]:
    memory = ""
    try:
        with open("/proc/meminfo") as fh:
            memory = f"{int(fh.readline().split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "scheduler": scheduler(),
    }


# Kernel settings that decide how runnable tasks spread over the cores, where the kernel has them:
# a run's idle share follows them as much as it follows ttsd. sched_vcpu_pack is not upstream
# Linux: the 2-core virtual machines these benchmarks ran on boot with it (15, read-only inside),
# and by its name it packs tasks onto fewer virtual CPUs; they were measured leaving a core idle
# while tasks waited on the other (README, "Distributed mode").
_SCHEDULER_KNOBS = ("sched_autogroup_enabled", "sched_vcpu_pack")


def scheduler() -> str:
    found = []
    for knob in _SCHEDULER_KNOBS:
        try:
            found.append(f"{knob}={Path('/proc/sys/kernel', knob).read_text().strip()}")
        except OSError:
            continue
    return ", ".join(found)


def commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def ttsd_server(data_dir: Path, **env: str) -> Iterator[str]:
    """``ttsd serve`` in embedded mode, in its own process; yields its base URL once ready."""
    with ttsd_process(data_dir, **env) as (url, _):
        yield url


@contextmanager
def ttsd_process(data_dir: Path, *args: str, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``ttsd serve [args]`` in its own process; yields its base URL once ready, and the process."""
    port = free_port()
    full_env = {**os.environ, "TTSD_DATA_DIR": str(data_dir), "TTSD_LOG_LEVEL": "WARNING", **env}
    log = (data_dir.parent / f"ttsd-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "ttsd.cli", "serve", "--port", str(port), *args],
        env=full_env,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"ttsd exited with {process.returncode}")
            time.sleep(0.2)
        else:
            raise RuntimeError("ttsd did not become ready")
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def publish(name: str, result: Any, text: str) -> None:
    """A scenario's results: ``bench/results/NAME.json`` and ``NAME.md``, the README's block, stdout."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{name}.md").write_text(text)
    update_readme_block(name, text)
    print(text)


def update_readme_block(name: str, results: str) -> None:
    """Put a benchmark's results (without their heading line) between the README's
    ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers, when both are there."""
    readme = ROOT / "README.md"
    content = readme.read_text()
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    if start in content and end in content:
        before, rest = content.split(start, 1)
        _, after = rest.split(end, 1)
        # Images sit beside the results file; the README is two directories up.
        body = re.sub(r"\]\(([\w.-]+\.png)\)", r"](bench/results/\1)", results.split("\n", 2)[2])
        readme.write_text(f"{before}{start}\n{body}{end}{after}")
