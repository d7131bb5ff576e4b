"""What hits keep between requests: stable presigned URLs (renewed after half their life), the memory
in front of the index, and rate-limit tokens leased from the shared bucket."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from ttsd.config import Settings
from ttsd.state.base import CacheEntry
from ttsd.state.recent import RecentEntries

from .conftest import unique
from .servers import Clock, stop_server


def test_presigned_urls_are_stable_within_half_their_life(stack: Any) -> None:
    server = stack.server("api-presign")
    try:
        body = {"text": unique("Presigned once.")}
        with server.client() as client:
            first = client.post("/v1/synthesize", json=body).json()
            if first["status"] != "done":
                server.wait_task(first["task_id"])
            done = client.post("/v1/synthesize", json=body).json()  # a hit: the object's URL
            time.sleep(1.1)  # a fresh signature would carry another X-Amz-Date
            again = client.post("/v1/synthesize", json=body).json()
        assert again["url"] == done["url"] and "X-Amz-Signature" in done["url"]
        assert httpx.get(done["url"]).status_code == 200
    finally:
        stop_server(server)


def test_presigned_url_is_renewed_after_half_its_life(monkeypatch: pytest.MonkeyPatch) -> None:
    from ttsd.store import s3

    store = s3.S3Store(
        Settings(storage="s3", s3_endpoint_url="http://127.0.0.1:9", s3_access_key="a", s3_secret_key="b")
    )
    first = store.locate("ab/" + "ab" * 32 + "/audio.mp3")
    assert store.locate("ab/" + "ab" * 32 + "/audio.mp3") == first
    now = time.monotonic()
    monkeypatch.setattr(s3.time, "monotonic", lambda: now + 1801)  # past half of the 3600 s default
    time.sleep(1.1)
    assert store.locate("ab/" + "ab" * 32 + "/audio.mp3") != first


def _entry(key: str, fmt: str = "mp3", expires_in: float = 60.0, now: float | None = None) -> CacheEntry:
    now = time.time() if now is None else now
    return CacheEntry(key, fmt, f"{key}/{fmt}", 10, "e", "audio/mpeg", 22050, 1.0, now, now + expires_in)


def test_recent_entries_revalidate_expire_and_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Sleeping past a window says nothing about where its edge is, and a loaded machine can sleep
    # past any edge: a clock of the test's own checks each one from both sides.
    clock = Clock.replacing_time(monkeypatch, RecentEntries)
    recent = RecentEntries(revalidate=0.25, capacity=3)
    recent.put(_entry("a", now=clock.now))
    assert recent.get("a", "mp3") is not None and recent.get("a", "wav") is None
    clock.now += 0.125
    assert recent.get("a", "mp3") is not None  # inside the window: from memory
    clock.now += 0.125
    assert recent.get("a", "mp3") is None  # read from the index again after the window
    recent.put(_entry("b", expires_in=0.125, now=clock.now))
    clock.now += 0.0625
    assert recent.get("b", "mp3") is not None
    clock.now += 0.0625
    assert recent.get("b", "mp3") is None  # expiry is exact (the window is not over yet)
    for key in "cdef":
        recent.put(_entry(key))
    assert len(recent) == 3 and recent.get("c", "mp3") is None and recent.get("f", "mp3") is not None
    recent.drop("f", "mp3")
    assert recent.get("f", "mp3") is None


def test_leased_rate_limit_tokens_never_exceed_the_shared_bucket(stack: Any) -> None:
    """Two API processes' limiters (two clients) hammer one key: together they admit no more than
    the bucket allows, and leases cost little of it."""
    import asyncio

    import redis.asyncio

    from ttsd.state.redis.autopipeline import AutoPipeline
    from ttsd.state.redis.keys import RedisKeys
    from ttsd.state.redis.rate import RedisRateLimiter

    rate, burst, seconds = 200.0, 80, 1.5

    async def hammer() -> tuple[int, float]:
        clients = [redis.asyncio.Redis.from_url(stack.redis.url) for _ in range(2)]
        keys = RedisKeys(f"lease{time.time_ns()}")
        limiters = [RedisRateLimiter(AutoPipeline(c), keys) for c in clients]
        allowed = 0
        started = time.monotonic()

        async def caller(limiter: RedisRateLimiter) -> None:
            nonlocal allowed
            while time.monotonic() - started < seconds:
                decision = await limiter.take("key:busy", rate, burst)
                allowed += decision.allowed
                await asyncio.sleep(0 if decision.allowed else 0.001)

        await asyncio.gather(*(caller(limiters[i % 2]) for i in range(16)))
        elapsed = time.monotonic() - started
        for c in clients:
            await c.aclose()
        return allowed, elapsed

    allowed, elapsed = asyncio.run(hammer())
    ceiling = burst + rate * elapsed
    assert allowed <= ceiling + 1
    assert allowed >= 0.8 * ceiling  # lapsed leases waste little
