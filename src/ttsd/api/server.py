"""Serving the app: ``ttsd serve`` runs granian by default, or uvicorn (``TTSD_SERVER``).

granian parses HTTP in Rust threads beside the event loop and sends files zero-copy (the ASGI
``pathsend`` extension, which Starlette's FileResponse uses when offered); on this project's 2-core
benchmark it answers cache hits about 1.7x faster than uvicorn with httptools, and files about 5x
(``python -m bench hits``). It runs embedded, in this process's own event loop, so the app is
built from the settings object like any other, and SIGTERM drains accepted jobs as before.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket

from starlette.types import ASGIApp

from ..config import Settings
from ..errors import AddressInUse, ConfigError
from ..logs import adopt

log = logging.getLogger("ttsd.api")

# Connections still open this long after the drain may be cut (uvicorn's graceful timeout was 30 s).
_CONNECTION_GRACE = 30


def serve(app: ASGIApp, settings: Settings) -> None:
    claim_address(settings.host, settings.port)
    adopt("py.warnings")  # a library's warning is a log line like any other
    if settings.server == "uvicorn":
        import uvicorn

        # uvicorn's lines go through ttsd's handler (``create_app`` set it up), not its own.
        adopt("uvicorn", level=logging.WARNING)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            log_level="warning",
            timeout_graceful_shutdown=_CONNECTION_GRACE,
        )
        return
    import uvloop

    uvloop.run(_granian(app, settings))


async def _granian(app: ASGIApp, settings: Settings) -> None:
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    # As uvicorn does by default: a proxy on this host may say the scheme and the client address
    # (X-Forwarded-Proto/-For), so URLs handed out behind TLS termination say https.
    proxied = ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1")  # type: ignore[arg-type]
    server = Server(
        proxied,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        websockets=True,
        backlog=2048,
        log_level=LogLevels.warning,
    )
    # granian set up its own handler and format as it was made: its lines go through ttsd's.
    adopt("_granian", level=logging.WARNING)
    # Lifespan shutdown (the drain of accepted jobs, up to TTSD_SHUTDOWN_GRACE) runs inside the
    # worker; it is only cut after that and the connection grace.
    server.workers_kill_timeout = int(settings.shutdown_grace) + _CONNECTION_GRACE
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)
    await server.serve()


def claim_address(host: str, port: int) -> None:
    """Raise unless ``host:port`` is free to listen on. granian listens with ``SO_REUSEPORT``, so a
    second ``ttsd serve`` on a taken port would start and share it with the first, the kernel
    spreading connections over both whatever their settings (a botched restart, an old version left
    running): refused here, as a plain bind would be. ``SO_REUSEADDR``, as servers set it, lets a
    port that only has connections closing on it pass."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise AddressInUse(
                        f"{host}:{port} is taken: another process listens on it (another ttsd serve?)",
                        details={"host": host, "port": port},
                    ) from exc
                raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
