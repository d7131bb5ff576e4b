"""One middleware for what every request needs watched: a request id, an access-log event
(JSON or console, never the request text) and Prometheus request metrics by route and status."""

from __future__ import annotations

import functools
import itertools
import os
import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..logs import log_request

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Observability:
    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "ttsd_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "ttsd_http_request_seconds",
            "Time to the last byte of the response",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=registry,
        )

        # Request ids: unique per process start (random prefix) and within it (a counter); a uuid4
        # per request costs more than a cache hit's lookup.
        self._id_prefix = os.urandom(4).hex()
        self._ids = itertools.count(int.from_bytes(os.urandom(4), "big"))
        self._series = functools.lru_cache(maxsize=4096)(self._requests_series)
        self._latency = functools.lru_cache(maxsize=1024)(self._latency_series)

    def _requests_series(self, method: str, route: str, status: int) -> Any:
        return self.requests.labels(method, route, str(status))

    def _latency_series(self, method: str, route: str) -> Any:
        return self.latency.labels(method, route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        offered = next((v for k, v in scope.get("headers") or () if k == b"x-request-id"), b"")
        request_id = offered.decode("latin-1") if offered and _REQUEST_ID.match(offered) else None
        request_id = request_id or f"{self._id_prefix}{next(self._ids) & 0xFFFFFFFF:08x}"
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["log"] = {}  # routes add task_id, key, text_length here
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            status = status or 500
            raise
        finally:
            elapsed = time.perf_counter() - started
            route_obj = scope.get("route")
            route = getattr(route_obj, "path", None) or "unmatched"
            method = scope.get("method", "WS")
            self._series(method, route, status or 101).inc()
            self._latency(method, route).observe(elapsed)
            if route not in ("/healthz", "/metrics", "/readyz"):
                log_request(
                    {
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "status": status or 101,
                        "latency_ms": round(elapsed * 1000, 2),
                        **state["log"],
                    }
                )
