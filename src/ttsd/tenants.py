"""Tenants: who holds each API key, what it may send, and what of the cache it may see.

``TTSD_API_KEYS`` lists keys, comma-separated, each optionally named and given as its SHA-256 so
the configuration holds no secret::

    acme:sk-live-1234, globex:sha256:<64 hex digits>, sk-unnamed-5678

or, to give tenants their own rate limits, as JSON::

    [{"name": "acme", "sha256": "<64 hex>", "rate_limit": 20, "burst": 40}, {"key": "sk-..."}]

A key without a name is known as ``key-`` and the first 8 hex digits of its SHA-256: logs, metric
labels and ``/v1/stats`` name tenants, never keys. Keys are compared as digests, every one of them
on every request, in constant time, so timing says nothing about which key (or how much of one)
matched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DIGEST = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


@dataclass(frozen=True)
class Tenant:
    name: str
    digest: bytes  # SHA-256 of the key
    rate_limit: float | None = None  # None: TTSD_RATE_LIMIT
    burst: int | None = None  # None: TTSD_RATE_BURST


class Tenants:
    def __init__(self, tenants: Iterable[Tenant] = ()) -> None:
        self._all = tuple(tenants)
        names = [t.name for t in self._all]
        if len(set(names)) != len(names):
            raise ConfigError("TTSD_API_KEYS names a tenant twice")
        if len({t.digest for t in self._all}) != len(self._all):
            raise ConfigError("TTSD_API_KEYS lists one key twice")

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Tenants:
        """Tenants from TTSD_API_KEYS, split at commas or given as one JSON list."""
        listed = list(entries)
        if len(listed) == 1 and listed[0].lstrip().startswith("["):
            return cls(_from_json(listed[0]))
        return cls(_from_entry(entry) for entry in listed)

    def __bool__(self) -> bool:
        return bool(self._all)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self._all)

    def match(self, presented: str) -> Tenant | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for tenant in self._all:  # all of them, whichever matches
            if hmac.compare_digest(digest, tenant.digest):
                found = tenant
        return found


def _from_entry(entry: str) -> Tenant:
    entry = entry.strip()
    if entry.startswith("sha256:"):
        return _tenant(None, digest=entry)
    name, colon, rest = entry.partition(":")
    if colon and _NAME.match(name) and rest:
        return _tenant(name, digest=rest) if rest.startswith("sha256:") else _tenant(name, key=rest)
    return _tenant(None, key=entry)


def _from_json(text: str) -> list[Tenant]:
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"TTSD_API_KEYS is not valid JSON: {exc}") from exc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError("TTSD_API_KEYS as JSON must be a list of objects")
    tenants = []
    for item in items:
        unknown = set(item) - {"name", "key", "sha256", "rate_limit", "burst"}
        if unknown:
            raise ConfigError(f"TTSD_API_KEYS: unknown fields {sorted(unknown)}")
        if ("key" in item) == ("sha256" in item):
            raise ConfigError("TTSD_API_KEYS: each entry has a key or a sha256, not both")
        digest = f"sha256:{item['sha256']}" if "sha256" in item else None
        rate, burst = item.get("rate_limit"), item.get("burst")
        if rate is not None and (not isinstance(rate, int | float) or rate < 0):
            raise ConfigError("TTSD_API_KEYS: rate_limit must be a number of requests per second, 0 or more")
        if burst is not None and (not isinstance(burst, int) or burst < 1):
            raise ConfigError("TTSD_API_KEYS: burst must be a whole number of requests, 1 or more")
        tenant = _tenant(item.get("name"), key=item.get("key"), digest=digest)
        tenants.append(Tenant(tenant.name, tenant.digest, None if rate is None else float(rate), burst))
    return tenants


def _tenant(name: str | None, *, key: str | None = None, digest: str | None = None) -> Tenant:
    if digest is not None:
        found = _DIGEST.match(digest)
        if not found:
            raise ConfigError("TTSD_API_KEYS: a sha256 is 64 hex digits")
        raw = bytes.fromhex(found.group(1))
    elif key:
        raw = hashlib.sha256(key.encode()).digest()
    else:
        raise ConfigError("TTSD_API_KEYS: an empty key")
    if name is None:
        name = f"key-{raw.hex()[:8]}"
    elif not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError("TTSD_API_KEYS: a tenant's name is 1 to 64 of A-Z a-z 0-9 _ . -")
    return Tenant(name, raw)
