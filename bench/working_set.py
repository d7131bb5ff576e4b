"""A working set of cached texts, for benchmarks of hits over many texts (``wrk.wrk_over``).

``seed`` makes N distinct texts cached in a deployment through the job body's own ``keep`` (their
keys, object names and index entries are what jobs make), and ``check_hits`` asks the API for every
one of them, which must answer as a plain hit: a run never measures misses (nor evictions) by
accident, and the API process has read every text, as a working set in use is read.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from ttsd.config import Settings
from ttsd.jobs.model import Job
from ttsd.jobs.pieces import keep
from ttsd.links import Links
from ttsd.prepare import SynthesisRequest, prepare_job
from ttsd.state import build_index
from ttsd.store import build_store
from ttsd.voices import Catalogue

WORKING_SET = 20_000
CONCURRENCY = 16


def working_set(n: int = WORKING_SET, *, voice: str = "en-joe", fmt: str = "mp3") -> list[dict[str, Any]]:
    """``n`` distinct request bodies, each a pair of short sentences from ``sentences(n)``."""
    said = sentences(n)
    bodies = [{"text": f"{a} {b}", "voice": voice, "format": fmt} for a in said for b in said if a != b]
    return bodies[:n]


# Two-word sentences: 16 x 16 of them before numbered ones take over.
_ADJECTIVES = "red blue green gold grey pink black white brown tall short quick slow warm cold loud"
_NOUNS = "door cat dog boat car bird tree lamp desk road ship bell fish cup hat coat"


def sentences(n: int) -> list[str]:
    """Enough distinct short sentences for ``n`` ordered pairs of two different ones."""
    count = math.ceil((1 + math.sqrt(1 + 4 * n)) / 2)
    short = [f"{a.capitalize()} {b}." for b in _NOUNS.split() for a in _ADJECTIVES.split()]
    return (short + [f"Counter {i} is open." for i in range(count)])[:count]


class _Connection:
    """One keep-alive HTTP/1.1 connection, for the prefill's tens of thousands of requests: httpx
    costs several times more per request than the server does, on the same cores."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parsed = httpx.URL(url)
        self._address = (parsed.host, parsed.port or 80)
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._head = f"Host: {parsed.host}:{parsed.port}\r\n{extra}"
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """The status and the JSON body of the answer."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(*self._address)
        reader, writer = self._streams
        data = json.dumps(body).encode() if body is not None else b""
        kind = "Content-Type: application/json\r\n" if body is not None else ""
        writer.write(
            f"{method} {path} HTTP/1.1\r\n{self._head}{kind}Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        fields = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
        content = await reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection") == "close":
            writer.close()
            self._streams = None
        return status, json.loads(content) if content else None

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()


async def _each(
    url: str,
    headers: dict[str, str],
    bodies: list[dict[str, Any]],
    one: Callable[[_Connection, dict[str, Any]], Awaitable[None]],
    concurrency: int,
) -> None:
    pending = iter(bodies)

    async def lane() -> None:
        conn = _Connection(url, headers)
        try:
            for body in pending:  # one shared iterator: the lanes take turns
                await one(conn, body)
        finally:
            conn.close()

    await asyncio.gather(*(lane() for _ in range(concurrency)))


async def _hit(conn: _Connection, body: dict[str, Any]) -> None:
    status, answer = await conn.request("POST", "/v1/synthesize", body)
    if status != 200 or answer.get("task_id") is not None:
        raise RuntimeError(f"{body['text']!r} is not a plain cache hit after prefill: {answer}")


def seed(bodies: list[dict[str, Any]], settings: Settings, like: dict[str, Any]) -> float:
    """Make every body of ``bodies`` a cached text of the deployment ``settings`` describes, as its
    jobs would have stored and indexed it (``keep``, the job body's own function: same keys, same
    object names, same entries), each holding the audio of ``like`` (a body cached there already);
    returns the seconds it took. A hit on /v1/synthesize never reads the audio, so one reply's
    bytes serve them all, and 20,000 texts take a minute rather than the hours that encoding each
    through the API takes on two cores (distributed mode adds Celery round trips per job)."""
    started = time.monotonic()
    catalogue = Catalogue.of(settings)
    links = Links.of(settings)
    index, store = build_index(settings), build_store(settings, links)

    def job_of(body: dict[str, Any]) -> Job:
        request = SynthesisRequest(text=body["text"], voice=body["voice"], format=body["format"])
        return prepare_job(request, catalogue, links, max_text_chars=settings.max_text_chars)

    sample = job_of(like)
    entry = index.get(sample.key, sample.fmt)
    if entry is None:
        raise RuntimeError(f"{like['text']!r} is not cached in that deployment")
    data = store.get(entry.object_name)

    def copy(body: dict[str, Any]) -> None:
        job = job_of(body)
        keep(store, index, job.key, job.fmt, data, entry.content_type, entry.sample_rate, entry.duration,
             settings.cache_ttl)  # fmt: skip

    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(copy, bodies))
    finally:
        index.close()
    return time.monotonic() - started


def check_hits(url: str, bodies: list[dict[str, Any]], headers: dict[str, str] | None = None) -> float:
    """Ask for every body once; each must be a plain cache hit (which also leaves them in that API
    process's memory, as a working set in use is); returns the seconds it took."""
    started = time.monotonic()
    asyncio.run(_each(url, headers or {}, bodies, _hit, CONCURRENCY))
    return time.monotonic() - started
