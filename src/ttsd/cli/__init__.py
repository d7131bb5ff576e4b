"""Command line: the only place that chooses exit codes. The parser and ``main`` are here, each
command in the module named for it (the cache tools together in ``cache``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import __version__, audio
from ..errors import ConfigError, InvalidRequest, TextTooLong, TtsdError
from .base import EXIT_ERROR, EXIT_USAGE
from .cache import batch_command, cache_command, warm_command
from .catalogue import lexicons_command, voices_command
from .say import say_command
from .serve import serve_command
from .worker import worker_command

_TENANT_HELP = "fill this tenant's own cache (TTSD_CACHE_SCOPE=tenant; a name in TTSD_API_KEYS)"
_TEXT_TYPES = ["text", "ssml"]
_AUTO = " (default: when it is a <speak> document)"
_RATE_HELP = (
    "pcm, wav or mp3 at this rate (8000, 16000, 22050, 24000, 44100, 48000) rather than the voice's; "
    "ulaw and alaw (.ulaw, .alaw: G.711 for phone lines) are 8000"
)


def _engines(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


_LEXICONS_HELP = "pronunciation lexicons to apply, comma-separated, first wins (TTSD_DEFAULT_LEXICONS follow)"


_POOLS_HELP = (
    "engine pools, comma-separated ENGINE[+ENGINE...]:SLOTS[@DEVICE[+DEVICE...]], e.g. "
    "piper+hibari+espeak:2,kokoro:1 or kokoro:4@cuda:0+cuda:1 (env TTSD_POOLS; replaces --engines/--slots)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttsd", description="Text-to-speech for high concurrency.")
    parser.add_argument("--version", action="version", version=f"ttsd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (embedded mode: engines in local processes)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1, env TTSD_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, env TTSD_PORT)")
    serve.add_argument("--data-dir", type=Path, help="cache and audio directory (env TTSD_DATA_DIR)")
    serve.add_argument("--engines", type=_engines, help="engines to load, comma-separated (env TTSD_ENGINES)")
    serve.add_argument(
        "--slots", dest="engine_slots", type=int, help="engine processes (env TTSD_ENGINE_SLOTS)"
    )
    serve.add_argument("--pools", help=_POOLS_HELP)
    serve.add_argument("--log-format", choices=["json", "console"], help="env TTSD_LOG_FORMAT")
    serve.add_argument(
        "--server", choices=["granian", "uvicorn"], help="HTTP server (default granian, env TTSD_SERVER)"
    )
    serve.set_defaults(func=serve_command)

    worker = sub.add_parser("worker", help="run a Celery engine worker (distributed mode; needs Redis)")
    worker.add_argument("--engines", type=_engines, help="engines to load (env TTSD_ENGINES)")
    worker.add_argument(
        "--slots", dest="engine_slots", type=int, help="engine processes (env TTSD_ENGINE_SLOTS)"
    )
    worker.add_argument("--pools", help=_POOLS_HELP)
    worker.add_argument("--log-format", choices=["json", "console"], help="env TTSD_LOG_FORMAT")
    worker.add_argument(
        "--name", default=f"ttsd-{os.getpid()}@%h", help="Celery node name, unique per worker"
    )
    worker.set_defaults(func=worker_command)

    say = sub.add_parser("say", help="synthesize one text to a file, without a server")
    say.add_argument("text")
    say.add_argument("-v", "--voice", help="voice name (see `ttsd voices`)")
    say.add_argument("-l", "--language", help="language tag, picks a voice when -v is not given")
    say.add_argument("-o", "--output", required=True, help="output file; its extension picks the format")
    say.add_argument("-f", "--format", choices=list(audio.FORMATS), help="override the format")
    say.add_argument("--sample-rate", type=int, help=_RATE_HELP)
    say.add_argument("--text-type", choices=_TEXT_TYPES, help="ssml: TEXT is an SSML document" + _AUTO)
    say.add_argument("--speed", type=float, default=1.0)
    say.add_argument("--seed", type=int)
    say.add_argument("--lexicons", type=_engines, default=(), help=_LEXICONS_HELP)
    say.add_argument("--engines", type=_engines)
    say.set_defaults(func=say_command)

    warm = sub.add_parser("warm", help="pre-synthesize hot texts (one per line) into the cache")
    warm.add_argument("file")
    warm.add_argument("-v", "--voice")
    warm.add_argument("-f", "--formats", default="mp3", help="comma-separated formats (default mp3)")
    warm.add_argument("--sample-rate", type=int, help=_RATE_HELP)
    warm.add_argument("--text-type", choices=_TEXT_TYPES, help="ssml: each line is an SSML document" + _AUTO)
    warm.add_argument("--tenant", help=_TENANT_HELP)
    warm.add_argument("--lexicons", type=_engines, default=(), help=_LEXICONS_HELP)
    warm.add_argument("--engines", type=_engines)
    warm.add_argument("--slots", dest="engine_slots", type=int)
    warm.set_defaults(func=warm_command)

    batch = sub.add_parser("batch", help="synthesize every line of FILE into DIR (resumes where it stopped)")
    batch.add_argument("file")
    batch.add_argument("--out", required=True, help="output directory: 00001.mp3, 00002.mp3, ...")
    batch.add_argument("-v", "--voice")
    batch.add_argument("-f", "--format", default="mp3", choices=list(audio.FORMATS))
    batch.add_argument("--sample-rate", type=int, help=_RATE_HELP)
    batch.add_argument("--text-type", choices=_TEXT_TYPES, help="ssml: each line is an SSML document" + _AUTO)
    batch.add_argument("--tenant", help=_TENANT_HELP)
    batch.add_argument("--lexicons", type=_engines, default=(), help=_LEXICONS_HELP)
    batch.add_argument("--engines", type=_engines)
    batch.add_argument("--slots", dest="engine_slots", type=int)
    batch.set_defaults(func=batch_command)

    cache = sub.add_parser("cache", help="inspect or empty the cache")
    cache.add_argument("action", choices=["stats", "purge"])
    cache.add_argument("--all", action="store_true", help="with purge: every entry, not just expired ones")
    cache.set_defaults(func=cache_command)

    voices = sub.add_parser("voices", help="list the voice catalogue")
    voices.add_argument("--json", action="store_true")
    voices.add_argument("--engines", type=_engines)
    voices.set_defaults(func=voices_command)

    lexicons = sub.add_parser(
        "lexicons", help="check the pronunciation lexicons (as `serve` would at start) and list them"
    )
    lexicons.add_argument("--dir", dest="lexicon_dir", type=Path, help="env TTSD_LEXICON_DIR")
    lexicons.add_argument("--json", action="store_true")
    lexicons.add_argument("--engines", type=_engines)
    lexicons.set_defaults(func=lexicons_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (InvalidRequest, TextTooLong, ConfigError) as exc:
        print(f"ttsd: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except TtsdError as exc:
        print(f"ttsd: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
