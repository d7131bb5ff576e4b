"""Audio storage: local files (embedded mode) or S3-compatible object storage."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from ..links import Links
    from .base import AudioStore


def build_store(settings: Settings, links: Links) -> AudioStore:
    """The store, naming new objects with ``links``'s keyed digest."""
    store: AudioStore
    if settings.storage == "s3":
        from .s3 import S3Store

        store = S3Store(settings)
    else:
        from .local import LocalStore

        store = LocalStore(settings.audio_dir)
    store.tag = links.object_tag
    return store
