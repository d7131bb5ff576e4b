from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ttsd.errors import AudioNotFound
from ttsd.state.base import CacheEntry, CacheIndex, Stage, Status, TaskStatus
from ttsd.state.memory import MemoryTaskBoard
from ttsd.state.sqlite import SqliteCacheIndex
from ttsd.store.base import PIECE, LocalFile, object_name
from ttsd.store.local import LocalStore

from .servers import Clock


def entry(key: str, fmt: str = "wav", size: int = 100, ttl: float = 60) -> CacheEntry:
    now = time.time()
    return CacheEntry(key, fmt, object_name(key, fmt), size, "etag", "audio/wav", 22050, 1.0, now, now + ttl)


def test_index_round_trip_and_ttl(tmp_path: Path) -> None:
    index = SqliteCacheIndex(tmp_path / "i.db")
    index.put(entry("a" * 64))
    index.put(entry("b" * 64, ttl=-1))
    found = index.get("a" * 64, "wav")
    assert found is not None and found.object_name == object_name("a" * 64, "wav") and found.size == 100
    assert index.get("a" * 64, "mp3") is None
    assert index.get("b" * 64, "wav") is None  # expired
    dropped = index.evict(max_bytes=10**9)
    assert dropped == [object_name("b" * 64, "wav")]
    index.close()


def test_index_is_shared_across_connections(tmp_path: Path) -> None:
    writer = SqliteCacheIndex(tmp_path / "i.db")
    reader = SqliteCacheIndex(tmp_path / "i.db")
    writer.put(entry("c" * 64))
    assert reader.get("c" * 64, "wav") is not None
    writer.close()
    reader.close()


def test_eviction_is_least_recently_used(tmp_path: Path) -> None:
    index = SqliteCacheIndex(tmp_path / "i.db")
    for ch in "abc":
        index.put(entry(ch * 64, size=100))
        time.sleep(0.01)
    dropped = index.evict(max_bytes=250)
    assert dropped == [object_name("a" * 64, "wav")]
    assert index.stats().bytes == 200
    index.close()


def test_store_writes_atomically_and_refuses_escapes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "audio")
    name = object_name("d" * 64, "audio.wav")
    store.put(name, b"RIFF....", "audio/wav")
    assert store.get(name) == b"RIFF...."
    assert not list((tmp_path / "audio").rglob(".tmp-*"))
    location = store.locate(name)
    assert isinstance(location, LocalFile) and location.path.is_file()
    with pytest.raises(AudioNotFound):
        store.get("../../etc/passwd")
    with pytest.raises(AudioNotFound):
        store.get(object_name("e" * 64, "audio.wav"))
    store.delete(name)
    assert not store.exists(name)


def test_board_keeps_unfinished_tasks_and_expires_finished_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    # A sleep past the TTL cannot tell "expired" from "never stored"; a clock of the test's own
    # checks the finished task on both sides of its expiry, and the unfinished one long after.
    clock = Clock.replacing_time(monkeypatch, MemoryTaskBoard)
    board = MemoryTaskBoard(ttl=0.5)
    now = clock.now
    queued = TaskStatus(
        task_id="1" * 32,
        status=Status.QUEUED,
        stage=Stage.QUEUED,
        key="k",
        format="wav",
        created_at=now,
        updated_at=now,
    )
    board.put(queued)
    board.put(queued.model_copy(update={"task_id": "2" * 32}).advance(Stage.DONE, 100))
    clock.now += 0.25
    assert board.get("2" * 32) is not None  # finished, kept until its TTL is over
    clock.now += 0.25
    assert board.get("1" * 32) is not None
    assert board.get("2" * 32) is None
    clock.now += 3600
    assert board.get("1" * 32) is not None  # an unfinished task is kept however long it runs


@pytest.fixture(params=["sqlite", "redis"])
def cache_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CacheIndex]:
    """Each index implementation: SQLite (embedded mode), and Redis on a server of the test's own."""
    import redis

    from ttsd.state.redis.index import RedisCacheIndex
    from ttsd.state.redis.keys import RedisKeys

    from .stack import Redis

    if request.param == "sqlite":
        index: CacheIndex = SqliteCacheIndex(tmp_path / "i.db")
        yield index
        index.close()
        return
    server = Redis(tmp_path)
    server.start()
    index = RedisCacheIndex(redis.Redis.from_url(server.url), RedisKeys("t"))
    try:
        yield index
    finally:
        index.close()
        server.stop()


def test_pieces_share_the_byte_budget_and_are_counted_apart(cache_index: CacheIndex) -> None:
    """Sentence pieces live in the same index as texts: one TTL, one LRU, one budget; ``stats``
    tells the two levels apart."""
    index = cache_index
    index.put(entry("a" * 64, PIECE, size=100))
    time.sleep(0.01)
    index.put(entry("b" * 64, "wav", size=300))
    time.sleep(0.01)
    index.put(entry("c" * 64, PIECE, size=50))
    stats = index.stats(levels=True)
    assert (stats.entries, stats.bytes, stats.pieces, stats.piece_bytes) == (3, 450, 2, 150)
    assert index.stats().pieces == 0  # the cheap form, for readiness, does not scan
    assert index.evict(max_bytes=400) == [object_name("a" * 64, PIECE)]  # least recently used
    stats = index.stats(levels=True)
    assert (stats.entries, stats.pieces, stats.piece_bytes) == (2, 1, 50)


def test_an_object_several_entries_share_is_counted_once_and_goes_with_the_last_of_them(
    cache_index: CacheIndex,
) -> None:
    """A batch's pieces are ranges of one object: its bytes are in the budget while any of them
    names it, and it is handed out for deletion once, with the last."""
    index = cache_index
    bundle = object_name("a" * 64, PIECE)
    a, b, c = (
        dataclasses.replace(entry(k * 64, PIECE, size=100), object_name=bundle, start=i * 100)
        for i, k in enumerate("abc")
    )
    index.put_many([a, b, c])
    assert index.get_many(["a" * 64, "b" * 64, "x" * 64], PIECE) == [a, b, None]
    assert index.get("c" * 64, PIECE) == c and c.span == (200, 100)
    assert index.stats().bytes == 300
    time.sleep(0.01)
    d = entry("d" * 64, "wav", size=100)
    index.put(d)
    # Over a budget of 300, a alone would free nothing: the object is freed with c, the last.
    assert index.evict(max_bytes=300) == [bundle]
    assert (index.stats().entries, index.stats().bytes) == (1, 100)
    index.put_many([a, b, c])
    assert index.delete("b" * 64, PIECE) == [] and index.stats().bytes == 400
    # b's share of the bundle waits for the last of it, still a piece's.
    assert index.stats(levels=True).piece_bytes == 300
    # A piece written again in an object of its own leaves the bundle, which a still names.
    alone = dataclasses.replace(c, object_name=object_name("c" * 64, PIECE, "", "ff"), start=0)
    index.put(alone)
    assert index.get("c" * 64, PIECE) == alone and index.stats().bytes == 500
    assert index.delete("a" * 64, PIECE) == [bundle] and index.stats().bytes == 200
    assert index.evict(max_bytes=0) == [d.object_name, alone.object_name]
    assert (index.stats().entries, index.stats().bytes) == (0, 0)


def test_a_text_file_and_the_sentences_inside_it_count_its_bytes_once(cache_index: CacheIndex) -> None:
    """A wav file holds its text's sentences unchanged, and they are entries for ranges of it
    (``jobs.pieces.keep_text``): the budget counts the file's bytes once, not its sentences again."""
    index = cache_index
    text = entry("f" * 64, "wav", size=1000)
    one, two = (
        dataclasses.replace(entry(k * 64, PIECE, size=size), object_name=text.object_name, start=start)
        for k, size, start in (("1", 400, 44), ("2", 500, 444))
    )
    index.put_many([one, two, text])
    stats = index.stats(levels=True)
    assert (stats.entries, stats.bytes, stats.pieces, stats.piece_bytes) == (3, 1000, 2, 0)
    assert index.evict(max_bytes=1000) == [] and index.stats().entries == 3
    # Its text gone, its sentences still name the file: its bytes stay until the last goes, and
    # are theirs now.
    assert index.delete(text.key, "wav") == [] and index.stats().bytes == 1000
    stats = index.stats(levels=True)
    assert (stats.entries, stats.bytes, stats.pieces, stats.piece_bytes) == (2, 1000, 2, 1000)
    assert index.evict(max_bytes=999) == [text.object_name]
    assert (index.stats().entries, index.stats().bytes) == (0, 0)
