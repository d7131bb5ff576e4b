"""Capability links: the public names of audio, of tasks and of stored objects carry a keyed digest.

A cache key is the SHA-256 of what is synthesized (``keys.SynthesisSpec``), a scheme anyone can
compute from a guessed text. Names made from the key alone would let anyone who can reach the
service (or a bucket behind a CDN) confirm what it said to a customer by guessing the text, and
fetch it. So every name handed out or stored is the key with an HMAC of it under a server secret
(``TTSD_URL_SECRET``): ``/v1/audio/{key}-{tag}.{fmt}``, task ids, and the directory of a key's
objects. The key itself stays what it was, so the cache is shared across secrets: a new secret
invalidates links (and task ids), never audio (the index records each entry's object name).

In embedded mode the secret is generated once into the data directory (mode 0600) when unset; in
distributed mode every API process and worker must share one, and none starts without it.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Settings

KEY_RE = re.compile(r"^[0-9a-f]{64}$")
TASK_ID_RE = re.compile(r"^[0-9a-f]{32}$")
SECRET_FILE = "url-secret"
MIN_SECRET_CHARS = 16
# 128 bits: guessing one link takes 2^127 tries on average.
_TAG_CHARS = 32


class Links:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def of(cls, settings: Settings) -> Links:
        return cls(url_secret(settings))

    def _tag(self, purpose: str, value: str) -> str:
        # hmac.digest: the one-shot C path, several times cheaper than an hmac object (a hit makes one).
        return hmac.digest(self._secret, f"{purpose}:{value}".encode(), "sha256").hex()[:_TAG_CHARS]

    def task_id(self, key: str, fmt: str) -> str:
        """Identical requests share it (so they merge in flight); nobody can compute it from a text."""
        return self._tag("task", f"{key}:{fmt}")

    def names_task(self, task_id: str, key: str, fmt: str) -> bool:
        """Whether this secret made ``task_id`` for (key, format)."""
        return hmac.compare_digest(task_id, self.task_id(key, fmt))

    def audio_id(self, key: str, fmt: str) -> str:
        """The public name of one encoded file, as in ``/v1/audio/{audio_id}``."""
        return f"{key}-{self._tag('audio', f'{key}.{fmt}')}.{fmt}"

    def parse_audio_id(self, value: str) -> tuple[str, str] | None:
        """The (key, format) of a genuine ``audio_id``; None for anything else (checked in
        constant time, so timing says nothing about how much of a forged tag was right)."""
        stem, dot, fmt = value.partition(".")
        key, dash, tag = stem.partition("-")
        if not dot or not dash or not KEY_RE.match(key) or not fmt.replace("_", "").isalnum():
            return None
        if not hmac.compare_digest(tag, self._tag("audio", f"{key}.{fmt}")):
            return None
        return key, fmt

    def object_tag(self, key: str) -> str:
        """Part of the name of the directory of a key's objects (``store.base.object_name``)."""
        return self._tag("object", key)


def url_secret(settings: Settings) -> bytes:
    if settings.url_secret is not None:
        value = settings.url_secret.get_secret_value()
        if len(value) < MIN_SECRET_CHARS:
            raise ConfigError(f"TTSD_URL_SECRET must be at least {MIN_SECRET_CHARS} characters")
        return value.encode()
    if settings.queue == "celery":
        raise ConfigError(
            "distributed mode needs TTSD_URL_SECRET, the same on every API process and worker "
            "(for example: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return _kept(settings.data_dir / SECRET_FILE)


def _kept(path: Path) -> bytes:
    """The secret in ``path``, made there first if there is none. Made whole in a temporary file
    and linked into place, so processes starting together all read the one that won."""
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".url-secret-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return _read(path)


def _read(path: Path) -> bytes:
    value = path.read_text().strip()
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(f"{path} holds no usable secret; delete it to have a new one made")
    return value.encode()
