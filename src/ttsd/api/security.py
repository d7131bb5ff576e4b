"""API keys and per-caller rate limits, as route dependencies.

Keys are compared in constant time and never logged or stored: a caller is known by a hash of its
key (or by its address when no keys are configured). Audio URLs need no key: they are
content-addressed and unguessable, so players and CDNs can fetch them as plain links.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ..config import Settings
from ..errors import RateLimited, Unauthorized
from ..service import TtsService
from .deps import ServiceDep


@dataclass(frozen=True)
class Caller:
    identity: str


def _presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or query.get("api_key") or None


def identify(
    settings: Settings, headers: Mapping[str, str], query: Mapping[str, str], address: str | None
) -> Caller:
    if not settings.api_keys:
        return Caller(f"addr:{address or 'unknown'}")
    presented = _presented_key(headers, query)
    if presented is None:
        raise Unauthorized("an API key is required (Authorization: Bearer <key>, or X-API-Key)")
    candidate = presented.encode()
    valid = False
    for key in settings.api_keys:  # every key is compared, so timing says nothing about which matched
        valid |= hmac.compare_digest(candidate, key.encode())
    if not valid:
        raise Unauthorized("the API key is not valid")
    return Caller("key:" + _fingerprint(candidate))


@functools.lru_cache(maxsize=64)
def _fingerprint(key: bytes) -> str:
    # Only valid keys get here, so the cache holds at most the configured keys.
    return hashlib.sha256(key).hexdigest()[:16]


async def admit(service: TtsService, caller: Caller) -> None:
    """Take one token from the caller's bucket, or raise RateLimited."""
    settings = service.settings
    if settings.rate_limit <= 0:
        return
    decision = await service.limiter.take(caller.identity, settings.rate_limit, settings.burst)
    if not decision.allowed:
        raise RateLimited(
            f"rate limit of {settings.rate_limit:g} requests per second exceeded",
            retry_after=decision.retry_after,
            limit=settings.rate_limit,
            details={"burst": settings.burst},
        )


# Dependencies are ``async def`` so that FastAPI runs them in the event loop, not its thread pool.
async def authenticated(request: Request, service: ServiceDep) -> Caller:
    address = request.client.host if request.client else None
    return identify(service.settings, request.headers, request.query_params, address)


async def admitted(request: Request, service: ServiceDep) -> Caller:
    caller = await authenticated(request, service)
    await admit(service, caller)
    return caller


AuthenticatedCaller = Annotated[Caller, Depends(authenticated)]
AdmittedCaller = Annotated[Caller, Depends(admitted)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
