"""Command line: the only place that chooses exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__, audio
from .config import Settings
from .errors import ConfigError, InvalidRequest, TextTooLong, TtsdError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _settings(args: argparse.Namespace, *names: str) -> Settings:
    """Settings from the environment, with the flags that were given taking precedence."""
    overrides: dict[str, Any] = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api.app import create_app

    settings = _settings(args, "host", "port", "data_dir", "engines", "engine_slots", "log_format")
    app = create_app(settings)
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=30
    )
    return EXIT_OK


def _worker(args: argparse.Namespace) -> int:
    from .jobs.celery_app import QUEUE, make_worker_app

    settings = _settings(args, "engines", "engine_slots", "log_format").model_copy(update={"queue": "celery"})
    app = make_worker_app(settings)
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={settings.engine_slots}",
            f"--queues={QUEUE}",
            f"--hostname={args.name}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
            "-O",
            "fair",
        ]
    )
    return EXIT_OK


def _say(args: argparse.Namespace) -> int:
    from .engines import select
    from .jobs.synth import synthesize_master
    from .service import SynthesisRequest, prepare_job
    from .voices import Catalogue

    settings = _settings(args, "engines")
    out = Path(args.output)
    fmt_name = args.format or out.suffix.lstrip(".").lower() or "wav"
    if fmt_name == "raw":
        fmt_name = "pcm"
    catalogue = Catalogue(select(settings.engines), settings.default_voice)
    request = SynthesisRequest(
        text=args.text,
        voice=args.voice,
        language=args.language,
        format=fmt_name,
        speed=args.speed,
        seed=args.seed,
    )
    job = prepare_job(request, catalogue, max_text_chars=settings.max_text_chars)
    engine = catalogue.specs[job.spec.engine].load(threads=settings.engine_threads)
    started = time.perf_counter()
    pcm = synthesize_master(engine, job.spec)
    data = audio.encode(pcm, engine.sample_rate, audio.get_format(job.fmt))
    out.write_bytes(data)
    seconds = len(pcm) / engine.sample_rate
    print(
        f"{out}: {seconds:.2f} s of {job.spec.voice} audio ({job.fmt}, {len(data)} bytes) "
        f"in {time.perf_counter() - started:.2f} s",
        file=sys.stderr,
    )
    return EXIT_OK


def _voices(args: argparse.Namespace) -> int:
    from .engines import select
    from .voices import Catalogue

    settings = _settings(args, "engines")
    catalogue = Catalogue(select(settings.engines), settings.default_voice)
    listing = catalogue.listing()
    if args.json:
        print(json.dumps(listing, indent=2, ensure_ascii=False))
        return EXIT_OK
    for v in listing:
        aliases = f"  (aliases: {', '.join(v['aliases'])})" if v["aliases"] else ""
        default = " *" if v["default"] else ""
        print(
            f"{v['name']:<14} {v['language']:<6} {v['gender']:<7} {v['engine']:<7} {v['sample_rate']} Hz"
            f"{default}{aliases}"
        )
    return EXIT_OK


def _engines(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


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
    serve.add_argument("--log-format", choices=["json", "console"], help="env TTSD_LOG_FORMAT")
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run a Celery engine worker (distributed mode; needs Redis)")
    worker.add_argument("--engines", type=_engines, help="engines to load (env TTSD_ENGINES)")
    worker.add_argument(
        "--slots", dest="engine_slots", type=int, help="engine processes (env TTSD_ENGINE_SLOTS)"
    )
    worker.add_argument("--log-format", choices=["json", "console"], help="env TTSD_LOG_FORMAT")
    worker.add_argument(
        "--name", default=f"ttsd-{os.getpid()}@%h", help="Celery node name, unique per worker"
    )
    worker.set_defaults(func=_worker)

    say = sub.add_parser("say", help="synthesize one text to a file, without a server")
    say.add_argument("text")
    say.add_argument("-v", "--voice", help="voice name (see `ttsd voices`)")
    say.add_argument("-l", "--language", help="language tag, picks a voice when -v is not given")
    say.add_argument("-o", "--output", required=True, help="output file; its extension picks the format")
    say.add_argument("-f", "--format", choices=list(audio.FORMATS), help="override the format")
    say.add_argument("--speed", type=float, default=1.0)
    say.add_argument("--seed", type=int)
    say.add_argument("--engines", type=_engines)
    say.set_defaults(func=_say)

    voices = sub.add_parser("voices", help="list the voice catalogue")
    voices.add_argument("--json", action="store_true")
    voices.add_argument("--engines", type=_engines)
    voices.set_defaults(func=_voices)
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


if __name__ == "__main__":
    sys.exit(main())
