"""Audio storage: immutable objects named by cache key. Synchronous, because it is called from the
job body's post-processing thread pool (the body itself is a coroutine, on the API's event loop or on
a Celery worker process's own) and from the API, which reads files on a thread; engine processes
never touch it, they only synthesize."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalFile:
    """The object is a file this process can serve itself."""

    path: Path


@dataclass(frozen=True)
class Redirect:
    """The object lives elsewhere (object storage, a CDN); send the client there."""

    url: str


Location = LocalFile | Redirect
Span = tuple[int, int]  # (start, length) of a range of an object's bytes


MASTER = "master"
# One sentence's audio, for reuse across texts: raw int16 samples, checked against the index's
# size and digest when read (see ``jobs.pieces``).
PIECE = "piece"
# Where an SSML document's marks fall in its audio (JSON), so a hit reports them as the job did.
MARKS = "marks"
_LEAVES = {MASTER: "master.flac", PIECE: "piece.pcm", MARKS: "marks.json"}
_KINDS = {leaf: kind for kind, leaf in _LEAVES.items()}


def object_name(key: str, fmt: str, tag: str = "", content: str = "") -> str:
    """Where the file for (key, format) lives; ``fmt`` is a format name, ``MASTER``, ``PIECE`` or ``MARKS``.
    ``tag``: the keyed digest (``links.Links.object_tag``) that keeps the names in a bucket behind
    a CDN unguessable; objects stored before it existed have none. ``content``: a digest of the
    bytes, so two writers of one key (a worker that woke after its job was handed on, an engine
    that never says a sentence the same way twice) write two objects, never one over the other: the
    object an index entry names always holds the bytes whose size and digest it recorded. Objects
    stored before it existed have none.

    Two hex characters of fan-out keep directories (and S3 listing prefixes) small."""
    leaf = _LEAVES.get(fmt) or f"audio.{fmt}"
    if content:
        stem, _, ext = leaf.partition(".")
        leaf = f"{stem}-{content}.{ext}"
    folder = f"{key}-{tag}" if tag else key
    return f"{key[:2]}/{folder}/{leaf}"


def parse_object_name(name: str) -> tuple[str, str] | None:
    """The (key, format) an ``object_name`` was made from."""
    parts = name.split("/")
    if len(parts) != 3:
        return None
    key = parts[1].partition("-")[0]
    stem, _, ext = parts[2].partition(".")
    leaf = f"{stem.partition('-')[0]}.{ext}"
    if leaf in _KINDS:
        return key, _KINDS[leaf]
    return (key, ext) if leaf.startswith("audio.") and ext else None


class AudioStore(ABC):
    # True when ``locate`` hands out URLs clients fetch directly; else the API serves the files.
    direct_urls: bool = False
    # The keyed digest in the names of a key's objects (see ``object_name``); None: the bare key.
    tag: Callable[[str], str] | None = None

    def name(self, key: str, fmt: str, content: str = "") -> str:
        """The name a new object for (key, format) holding bytes of digest ``content`` is stored
        under. Reads go by the name the index recorded, so objects stored under an earlier secret
        (or before names held a digest) are still found."""
        return object_name(key, fmt, self.tag(key) if self.tag is not None else "", content)

    @abstractmethod
    def put(self, name: str, data: bytes, content_type: str) -> None:
        """Write atomically: a reader sees the whole object or none of it."""

    @abstractmethod
    def get(self, name: str, span: Span | None = None) -> bytes:
        """The object's bytes, or those of ``span`` (start, length) of it: the pieces a batch made
        share one object (``jobs.pieces``). Raises AudioNotFound."""

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove the object; a missing object is not an error."""

    @abstractmethod
    def check(self) -> None:
        """Raise StorageError unless the store can be used (readiness)."""

    @abstractmethod
    def locate(self, name: str) -> Location:
        """Where a client should fetch the object from."""
