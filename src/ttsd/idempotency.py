"""Idempotency keys: the same key with another body is refused."""

from __future__ import annotations

from .errors import IdempotencyConflict, InvalidRequest
from .state.base import IdempotencyKeys

MAX_IDEMPOTENCY_KEY = 255


async def check_idempotency(keys: IdempotencyKeys, key: str, task: str, owner: str, ttl: float) -> None:
    """Task ids already follow from the normalised body, so a retried request lands on the same
    task by itself; the header adds the guarantee that a reused key with another body is refused.
    ``owner``: whose keys these are (a caller's identity): one caller's key never tells another
    anything."""
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
    bound = await keys.bind(f"{owner}\n{key}", task, ttl)
    if bound != task:
        raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
