"""``ttsd serve``: the HTTP API in embedded mode, its engines in local processes."""

from __future__ import annotations

import argparse

from .base import EXIT_OK, settings_from


def serve_command(args: argparse.Namespace) -> int:
    from ..api.app import create_app
    from ..api.server import serve

    settings = settings_from(
        args, "host", "port", "data_dir", "engines", "engine_slots", "pools", "log_format", "server"
    )
    serve(create_app(settings), settings)
    return EXIT_OK
