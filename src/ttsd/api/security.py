"""API keys and per-caller rate limits, as route dependencies.

Keys are compared in constant time and never logged or stored: a caller is known by its tenant's
name (``tenants``), or by its address when no keys are configured. Audio URLs need no key: they
are capability links (``links``), unguessable, so players and CDNs can fetch them as plain links.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ..errors import RateLimited, Unauthorized
from ..service import TtsService
from ..tenants import Tenant, Tenants
from .deps import ServiceDep, annotate


@dataclass(frozen=True)
class Caller:
    identity: str  # whose rate-limit bucket: the tenant, or the address
    tenant: Tenant | None = None

    @property
    def tenant_name(self) -> str:
        """The tenant's name; "" without keys."""
        return self.tenant.name if self.tenant is not None else ""


def _presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    # xi-api-key: ElevenLabs' header, which its clients send on the compatible routes.
    return headers.get("x-api-key") or headers.get("xi-api-key") or query.get("api_key") or None


def identify(
    tenants: Tenants, headers: Mapping[str, str], query: Mapping[str, str], address: str | None
) -> Caller:
    if not tenants:
        return Caller(f"addr:{address or 'unknown'}")
    presented = _presented_key(headers, query)
    if presented is None:
        raise Unauthorized("an API key is required (Authorization: Bearer <key>, or X-API-Key)")
    tenant = tenants.match(presented)
    if tenant is None:
        raise Unauthorized("the API key is not valid")
    return Caller(f"tenant:{tenant.name}", tenant)


async def authenticate(
    service: TtsService, headers: Mapping[str, str], query: Mapping[str, str], address: str | None
) -> Caller:
    """``identify``, with failed attempts limited per address (TTSD_AUTH_FAILURES a minute): past
    them, a wrong key gets 429 rather than 401, at no cost to callers whose key is right."""
    try:
        caller = identify(service.tenants, headers, query, address)
    except Unauthorized:
        per_minute = service.settings.auth_failures
        decision = await service.limiter.take(
            f"auth-failed:{address or 'unknown'}", per_minute / 60, per_minute
        )
        if not decision.allowed:
            service.metrics.auth_failures.labels("limited").inc()
            raise RateLimited(
                f"too many failed API keys from this address (at most {per_minute} a minute)",
                retry_after=decision.retry_after,
                limit=per_minute / 60,
            ) from None
        service.metrics.auth_failures.labels("refused").inc()
        raise
    if caller.tenant is not None:
        service.metrics.tenant_requests.labels(caller.tenant.name).inc()
    return caller


async def admit(service: TtsService, caller: Caller) -> None:
    """Take one token from the caller's bucket, or raise RateLimited."""
    settings = service.settings
    tenant = caller.tenant
    rate = tenant.rate_limit if tenant is not None and tenant.rate_limit is not None else settings.rate_limit
    if rate <= 0:
        return
    if tenant is not None and tenant.burst is not None:
        burst = tenant.burst
    elif tenant is not None and tenant.rate_limit is not None:
        burst = settings.rate_burst or max(1, math.ceil(2 * rate))
    else:
        burst = settings.burst
    decision = await service.limiter.take(caller.identity, rate, burst)
    if not decision.allowed:
        raise RateLimited(
            f"rate limit of {rate:g} requests per second exceeded",
            retry_after=decision.retry_after,
            limit=rate,
            details={"burst": burst},
        )


# Dependencies are ``async def`` so that FastAPI runs them in the event loop, not its thread pool.
async def authenticated(request: Request, service: ServiceDep) -> Caller:
    address = request.client.host if request.client else None
    caller = await authenticate(service, request.headers, request.query_params, address)
    if caller.tenant is not None:
        annotate(request.scope, tenant=caller.tenant.name)
    return caller


AuthenticatedCaller = Annotated[Caller, Depends(authenticated)]


async def admitted(service: ServiceDep, caller: AuthenticatedCaller) -> Caller:
    # Through Depends: FastAPI runs ``authenticated`` once a request, however many routes ask.
    await admit(service, caller)
    return caller


AdmittedCaller = Annotated[Caller, Depends(admitted)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
