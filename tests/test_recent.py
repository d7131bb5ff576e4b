"""RecentEntries in-process: stale-while-revalidate, refreshes in batches off the request's path,
and what it promises besides (evictions told win at once, misses never remembered, exact expiry, an
unannounced deletion noticed within twice the revalidation time). Time is the test's own clock, and
the index is a fake whose reads the test releases, so every interleaving is checked exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import pytest

from ttsd.errors import BackendUnavailable
from ttsd.state.base import CacheEntry
from ttsd.state.recent import RecentEntries, Slot

from .servers import Clock

R = 1.0  # revalidate: powers of two around it meet each edge exactly


def _entry(key: str, now: float, expires_in: float = 3600.0, fmt: str = "mp3") -> CacheEntry:
    return CacheEntry(key, fmt, f"{key}/{fmt}", 10, "e", "audio/mpeg", 22050, 1.0, now, now + expires_in)


class FakeIndex:
    """What the index holds; each batch read waits until the test releases it."""

    def __init__(self) -> None:
        self.entries: dict[Slot, CacheEntry] = {}
        self.batches: list[list[Slot]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def read_many(self, slots: Sequence[Slot]) -> list[CacheEntry | None]:
        self.batches.append(list(slots))
        await self.gate.wait()
        if self.fail:
            raise BackendUnavailable("the index is away")
        # A copy, as a read from SQLite or Redis makes a new object.
        return [replace(e) if (e := self.entries.get(slot)) is not None else None for slot in slots]


def _setup(monkeypatch: pytest.MonkeyPatch, **kwargs: int) -> tuple[Clock, FakeIndex, RecentEntries]:
    clock = Clock.replacing_time(monkeypatch, RecentEntries)
    index = FakeIndex()
    return clock, index, RecentEntries(revalidate=R, read_many=index.read_many, gather=0, **kwargs)


async def _settled(recent: RecentEntries) -> None:
    """Let the background refresh (if one runs) run to its end."""
    for _ in range(100):
        await asyncio.sleep(0)
        if recent._refreshing is None:
            return
    raise AssertionError("the refresh did not finish")


async def _reading(index: FakeIndex) -> None:
    """Until the refresh has begun its read."""
    for _ in range(100):
        if index.batches:
            return
        await asyncio.sleep(0)
    raise AssertionError("the refresh did not read")


def test_a_stale_entry_is_served_while_one_batch_refreshes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, index, recent = _setup(monkeypatch)

    async def scenario() -> None:
        for key in "abc":
            index.entries[(key, "mp3")] = entry = _entry(key, clock.now)
            recent.put(entry)
        clock.now += R / 2
        assert recent.serve("a", "mp3") is not None and index.batches == []  # fresh: no read at all
        clock.now += R / 2
        index.gate.clear()
        # Stale: each is still served at once, and queued for the refresh.
        assert all(recent.serve(key, "mp3") is not None for key in "abc")
        assert recent.serve("a", "mp3") is not None and recent.refreshing == 3  # queued once
        index.gate.set()
        await _settled(recent)
        assert index.batches == [[("a", "mp3"), ("b", "mp3"), ("c", "mp3")]]  # one round trip
        clock.now += R - 1 / 64
        assert recent.get("a", "mp3") is not None  # fresh again, counted from the refresh

    asyncio.run(scenario())


def test_an_unchanged_entry_keeps_its_object_across_refreshes(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, index, recent = _setup(monkeypatch)

    async def scenario() -> None:
        index.entries[("a", "mp3")] = first = _entry("a", clock.now)
        recent.put(first)
        clock.now += R
        recent.serve("a", "mp3")
        await _settled(recent)
        assert recent.get("a", "mp3") is first
        changed = replace(first, etag="other")
        index.entries[("a", "mp3")] = changed
        clock.now += R
        recent.serve("a", "mp3")
        await _settled(recent)
        assert recent.get("a", "mp3") == changed

    asyncio.run(scenario())


def test_an_unannounced_deletion_is_noticed_by_the_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, index, recent = _setup(monkeypatch)

    async def scenario() -> None:
        index.entries[("a", "mp3")] = entry = _entry("a", clock.now)
        recent.put(entry)
        del index.entries[("a", "mp3")]  # `ttsd cache purge` in another process: nobody is told
        clock.now += R - 1 / 64
        assert recent.serve("a", "mp3") is not None  # not yet due: served
        clock.now += 1 / 64
        assert recent.serve("a", "mp3") is not None  # due: served once more, and refreshed
        await _settled(recent)
        assert recent.serve("a", "mp3") is None and len(recent) == 0  # the miss is not remembered

    asyncio.run(scenario())


def test_an_entry_read_twice_revalidate_ago_is_never_served(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, index, recent = _setup(monkeypatch)

    async def scenario() -> None:
        index.entries[("a", "mp3")] = entry = _entry("a", clock.now)
        recent.put(entry)
        index.gate.clear()  # a refresh that falls behind
        clock.now += R
        assert recent.serve("a", "mp3") is not None
        clock.now += R - 1 / 64
        assert recent.serve("a", "mp3") is not None
        clock.now += 1 / 64
        assert recent.serve("a", "mp3") is None  # the request reads the index itself
        assert recent.last_known("a", "mp3") is entry  # for when that read finds the index away
        index.gate.set()
        await _settled(recent)

    asyncio.run(scenario())


@pytest.mark.parametrize("told", ["drop", "clear"])
def test_an_eviction_told_during_a_refresh_wins(monkeypatch: pytest.MonkeyPatch, told: str) -> None:
    clock, index, recent = _setup(monkeypatch)

    async def scenario() -> None:
        index.entries[("a", "mp3")] = entry = _entry("a", clock.now)
        recent.put(entry)
        clock.now += R
        index.gate.clear()
        recent.serve("a", "mp3")
        await _reading(index)
        assert index.batches == [[("a", "mp3")]]  # the read is under way, and sees the entry
        recent.drop("a", "mp3") if told == "drop" else recent.clear()
        assert recent.serve("a", "mp3") is None  # at once
        index.gate.set()
        await _settled(recent)
        assert recent.serve("a", "mp3") is None and len(recent) == 0  # the refresh did not bring it back

    asyncio.run(scenario())


def test_an_entry_read_anew_during_a_refresh_keeps_the_newer_read(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, index, recent = _setup(monkeypatch)

    async def scenario() -> None:
        index.entries[("a", "mp3")] = entry = _entry("a", clock.now)
        recent.put(entry)
        clock.now += R
        index.gate.clear()
        recent.serve("a", "mp3")
        await _reading(index)
        newer = replace(entry, etag="newer")
        clock.now += 1 / 64
        recent.put(newer)  # a request's own read, begun after the refresh's
        index.gate.set()
        await _settled(recent)
        assert recent.get("a", "mp3") == newer

    asyncio.run(scenario())


def test_expiry_is_exact_whether_fresh_or_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, index, recent = _setup(monkeypatch)

    async def scenario() -> None:
        recent.put(_entry("a", clock.now, expires_in=R / 2))
        recent.put(_entry("b", clock.now, expires_in=R + R / 2))
        clock.now += R / 2 - 1 / 64
        assert recent.serve("a", "mp3") is not None
        clock.now += 1 / 64
        assert recent.serve("a", "mp3") is None  # inside the fresh window, but expired
        index.gate.clear()
        clock.now += R / 2
        assert recent.serve("b", "mp3") is not None  # stale, refresh pending
        clock.now += R / 2
        assert recent.serve("b", "mp3") is None and recent.last_known("b", "mp3") is None
        index.gate.set()
        await _settled(recent)

    asyncio.run(scenario())


def test_refreshes_go_in_batches_until_none_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, index, recent = _setup(monkeypatch, batch=2)

    async def scenario() -> None:
        for key in "abcde":
            index.entries[(key, "mp3")] = entry = _entry(key, clock.now)
            recent.put(entry)
        clock.now += R
        for key in "abcde":
            recent.serve(key, "mp3")
        await _settled(recent)
        assert [len(batch) for batch in index.batches] == [2, 2, 1]
        assert all(recent.get(key, "mp3") is not None for key in "abcde")

    asyncio.run(scenario())


def test_a_failed_refresh_leaves_the_entries_and_waits_before_trying_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, index, recent = _setup(monkeypatch)

    async def scenario() -> None:
        index.entries[("a", "mp3")] = entry = _entry("a", clock.now)
        recent.put(entry)
        index.fail = True
        clock.now += R
        assert recent.serve("a", "mp3") is entry
        await _settled(recent)
        assert len(index.batches) == 1 and recent.last_known("a", "mp3") is entry
        clock.now += R / 2 - 1 / 64
        assert recent.serve("a", "mp3") is entry
        await _settled(recent)
        assert len(index.batches) == 1 and recent.refreshing == 1  # no retry within R/2 of the failure
        index.fail = False
        clock.now += 1 / 64
        assert recent.serve("a", "mp3") is entry
        await _settled(recent)
        assert len(index.batches) == 2 and recent.get("a", "mp3") is entry  # refreshed

    asyncio.run(scenario())


def test_capacity_bounds_entries_and_their_pending_refreshes(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, index, recent = _setup(monkeypatch, capacity=2)

    async def scenario() -> None:
        index.gate.clear()
        for key in "ab":
            recent.put(_entry(key, clock.now))
        clock.now += R
        recent.serve("a", "mp3")
        recent.serve("b", "mp3")
        await _reading(index)  # "a" and "b" taken by the refresh
        recent.put(_entry("c", clock.now))  # pushes "a" out
        assert len(recent) == 2 and recent.serve("a", "mp3") is None
        index.entries[("a", "mp3")] = _entry("a", clock.now)
        index.gate.set()
        await _settled(recent)
        assert recent.serve("a", "mp3") is None  # not brought back by the refresh

    asyncio.run(scenario())


def test_without_a_reader_a_stale_entry_is_read_by_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock.replacing_time(monkeypatch, RecentEntries)
    recent = RecentEntries(revalidate=R)
    recent.put(_entry("a", clock.now))
    clock.now += R - 1 / 64
    assert recent.serve("a", "mp3") is not None
    clock.now += 1 / 64
    assert recent.serve("a", "mp3") is None
