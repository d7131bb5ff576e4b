"""Shared state: the cache index, the task board, idempotency keys and rate limits, in memory and
SQLite (embedded mode) or in Redis (distributed mode)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from .base import CacheIndex


def build_index(settings: Settings) -> CacheIndex:
    """The cache index of the configured mode: SQLite under the data directory, or Redis."""
    if settings.queue == "celery":
        from .redis.client import connect
        from .redis.index import RedisCacheIndex
        from .redis.keys import RedisKeys

        return RedisCacheIndex(connect(settings), RedisKeys(settings.redis_prefix))
    from .sqlite import SqliteCacheIndex

    return SqliteCacheIndex(settings.index_path)
