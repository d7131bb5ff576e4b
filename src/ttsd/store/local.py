"""Audio on the local filesystem, under ``TTSD_DATA_DIR/audio``."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from ..errors import AudioNotFound, StorageError
from .base import AudioStore, LocalFile, Location, Span

# What ``object_name`` makes: hex fan-out, hex key (and tag), a plain leaf name.
_OBJECT_NAME = re.compile(r"[0-9a-f]{2}/[0-9a-f]{64}(?:-[0-9a-f]{32})?/[a-z0-9]+\.[a-z0-9]+")


class LocalStore(AudioStore):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        if _OBJECT_NAME.fullmatch(name):
            return self.root / name  # cannot leave the root: resolving (a syscall per part) is moot
        path = (self.root / name).resolve()
        # Names are built from validated hex keys, but a store must not trust its callers.
        if not path.is_relative_to(self.root):
            raise AudioNotFound(f"no audio named {name!r}")
        return path

    def put(self, name: str, data: bytes, content_type: str) -> None:
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"could not write audio: {exc.strerror or exc}") from exc

    def get(self, name: str, span: Span | None = None) -> bytes:
        try:
            if span is None:
                return self._path(name).read_bytes()
            with self._path(name).open("rb") as file:
                file.seek(span[0])
                return file.read(span[1])
        except FileNotFoundError as exc:
            raise AudioNotFound(f"no audio named {name!r}") from exc
        except OSError as exc:
            raise StorageError(f"could not read audio: {exc.strerror or exc}") from exc

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def delete(self, name: str) -> None:
        path = self._path(name)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # other formats of the same key are still there
            path.parent.rmdir()

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"audio directory {self.root} is not writable")

    def locate(self, name: str) -> Location:
        return LocalFile(self._path(name))
