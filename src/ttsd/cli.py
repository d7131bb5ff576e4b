"""Command line: the only place that chooses exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import __version__, audio
from .config import Settings
from .errors import ConfigError, InvalidRequest, TextTooLong, TtsdError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _settings(args: argparse.Namespace, *names: str) -> Settings:
    """Settings from the environment, with the flags that were given taking precedence."""
    overrides: dict[str, Any] = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"TTSD_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc


def _serve(args: argparse.Namespace) -> int:
    from .api.app import create_app
    from .api.server import serve

    settings = _settings(
        args, "host", "port", "data_dir", "engines", "engine_slots", "pools", "log_format", "server"
    )
    serve(create_app(settings), settings)
    return EXIT_OK


def _worker(args: argparse.Namespace) -> int:
    from .engines import REGISTRY, select
    from .pools import check_devices

    settings = _settings(args, "engines", "engine_slots", "pools", "log_format").model_copy(
        update={"queue": "celery"}
    )
    select(settings.engines, settings)
    check_devices(settings.pool_layout, {name: spec.device_kinds for name, spec in REGISTRY.items()})
    if len(settings.pool_layout) > 1:
        return _worker_per_pool(args, settings)
    from .jobs.celery_app import make_worker_app, queue_name

    pool = settings.pool_layout[0]
    app = make_worker_app(settings, pool)
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={pool.slots}",
            f"--queues={','.join(queue_name(e) for e in pool.engines)}",
            f"--hostname={args.name}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
            "-O",
            "fair",
        ]
    )
    return EXIT_OK


def _worker_per_pool(args: argparse.Namespace, settings: Settings) -> int:
    """Several pools: one Celery worker node per pool, since a node's processes are alike and take
    whatever its queues hold. They run as children of this process, which passes SIGTERM and
    SIGINT on and, if one of them ends, stops the rest and exits with its code (for the process
    manager to restart the whole worker)."""
    import signal
    import subprocess

    children = []
    for pool in settings.pool_layout:
        command = [
            sys.executable,
            "-m",
            "ttsd.cli",
            "worker",
            "--pools",
            str(pool),
            "--name",
            f"{pool.name}.{args.name}",
        ]
        if args.log_format:
            command += ["--log-format", args.log_format]
        children.append(subprocess.Popen(command))

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = None
    while code is None:
        for child in children:
            if child.poll() is not None:
                code = child.returncode
                break
        else:
            time.sleep(0.5)
    forward(signal.SIGTERM, None)
    for child in children:
        child.wait()
    return EXIT_OK if code == 0 else EXIT_ERROR


def _say(args: argparse.Namespace) -> int:
    from .jobs.synth import synthesize_master
    from .service import SynthesisRequest, prepare_job
    from .voices import Catalogue

    settings = _settings(args, "engines")
    out = Path(args.output)
    fmt_name = args.format or out.suffix.lstrip(".").lower() or "wav"
    if fmt_name == "raw":
        fmt_name = "pcm"
    catalogue = Catalogue.of(settings)
    request = SynthesisRequest(
        text=args.text,
        voice=args.voice,
        language=args.language,
        format=fmt_name,
        speed=args.speed,
        seed=args.seed,
        lexicons=args.lexicons,
    )
    job = prepare_job(request, catalogue, max_text_chars=settings.max_text_chars)
    engine = catalogue.specs[job.spec.engine].load(threads=settings.engine_threads)
    started = time.perf_counter()
    pcm = synthesize_master(engine, job.spec, sentences=job.sentences)
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
    from .voices import Catalogue

    settings = _settings(args, "engines")
    catalogue = Catalogue.of(settings)
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


def _lexicons(args: argparse.Namespace) -> int:
    """Read and compile TTSD_LEXICON_DIR as the service would at start (errors exit 2), and list it."""
    from .voices import Catalogue

    settings = _settings(args, "engines", "lexicon_dir")
    listing = Catalogue.of(settings).lexicons.listing()
    if args.json:
        print(json.dumps(listing, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not listing:
        print(f"no lexicons ({settings.lexicon_dir or 'TTSD_LEXICON_DIR is not set'})", file=sys.stderr)
    for lx in listing:
        default = " *" if lx["default"] else ""
        refused = "".join(f"\n    {engine}: {why}" for engine, why in lx["unsupported"].items())
        print(
            f"{lx['name']:<16} {lx['language']:<6} {lx['entries']:>6} entries  {lx['hash']}  "
            f"{','.join(lx['alphabets']) or 'aliases'}  engines: {','.join(lx['engines']) or '-'}"
            f"{default}{refused}"
        )
    return EXIT_OK


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.done = self.cached = self.failed = 0
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, *, cached: bool = False, failed: bool = False) -> None:
        self.done += 1
        self.cached += cached
        self.failed += failed
        if self.tty or self.done == self.total or self.done % 50 == 0:
            self.draw()

    def draw(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate else 0.0
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        line = (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"({self.cached} cached, {self.failed} failed) {rate:.1f}/s ETA {eta:.0f}s"
        )
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _warm(args: argparse.Namespace) -> int:
    import asyncio

    from .service import SynthesisRequest
    from .tools import Result, read_lines, synthesize_all

    settings = _settings(args, "engines", "engine_slots")
    texts = read_lines(Path(args.file))
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    requests = [
        SynthesisRequest(text=t, voice=args.voice, format=f, lexicons=args.lexicons)
        for t in texts
        for f in formats
    ]
    progress = Progress(len(requests), "warm")

    def on_result(result: Result) -> None:
        if result.error is not None:
            print(f"\nttsd: line {result.index // len(formats) + 1}: {result.error.message}", file=sys.stderr)
        progress.step(cached=result.cached, failed=result.error is not None)

    asyncio.run(synthesize_all(settings, requests, on_result))
    progress.close()
    return EXIT_ERROR if progress.failed else EXIT_OK


def _batch(args: argparse.Namespace) -> int:
    import asyncio

    from .service import SynthesisRequest
    from .tools import Result, fetch, read_lines, synthesize_all, write_atomically

    settings = _settings(args, "engines", "engine_slots")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = read_lines(Path(args.file))
    ext = "raw" if args.format == "pcm" else args.format
    targets = [out / f"{i + 1:05d}.{ext}" for i in range(len(texts))]
    requests = [
        SynthesisRequest(text=t, voice=args.voice, format=args.format, lexicons=args.lexicons) for t in texts
    ]
    # Resume: a file is written whole or not at all, so an existing one is finished work.
    done_before = {i for i, target in enumerate(targets) if target.exists()}
    progress = Progress(len(requests) - len(done_before), "batch")

    def on_result(result: Result) -> None:
        if result.entry is not None:
            write_atomically(targets[result.index], fetch(settings, result.entry))
        else:
            print(
                f"\nttsd: line {result.index + 1}: {result.error.message if result.error else '?'}",
                file=sys.stderr,
            )
        progress.step(cached=result.cached, failed=result.entry is None)

    asyncio.run(synthesize_all(settings, requests, on_result, skip=lambda i: i in done_before))
    progress.close()
    finished = len(targets) - progress.failed
    print(
        f"{out}: {finished} of {len(targets)} files ({len(done_before)} from an earlier run)", file=sys.stderr
    )
    return EXIT_ERROR if progress.failed else EXIT_OK


def _cache(args: argparse.Namespace) -> int:
    from .tools import cache_stats, purge

    settings = _settings(args)
    if args.action == "stats":
        stats = cache_stats(settings)
        share = 100 * stats.bytes / settings.cache_max_bytes
        where = settings.redis_url if settings.queue == "celery" else str(settings.data_dir)
        budget = settings.cache_max_bytes / 1e6
        size = f"{stats.bytes / 1e6:.1f} MB ({share:.1f} % of {budget:.0f} MB)"
        print(f"cache at {where}: {stats.entries} files, {size}")
        texts, text_bytes = stats.entries - stats.pieces, stats.bytes - stats.piece_bytes
        print(f"  texts (masters and formats): {texts} files, {text_bytes / 1e6:.1f} MB")
        print(f"  sentences (pieces):          {stats.pieces} files, {stats.piece_bytes / 1e6:.1f} MB")
        return EXIT_OK
    count = purge(settings, everything=args.all)
    print(f"purged {count} files ({'everything' if args.all else 'expired and over budget'})")
    return EXIT_OK


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
    serve.set_defaults(func=_serve)

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
    worker.set_defaults(func=_worker)

    say = sub.add_parser("say", help="synthesize one text to a file, without a server")
    say.add_argument("text")
    say.add_argument("-v", "--voice", help="voice name (see `ttsd voices`)")
    say.add_argument("-l", "--language", help="language tag, picks a voice when -v is not given")
    say.add_argument("-o", "--output", required=True, help="output file; its extension picks the format")
    say.add_argument("-f", "--format", choices=list(audio.FORMATS), help="override the format")
    say.add_argument("--speed", type=float, default=1.0)
    say.add_argument("--seed", type=int)
    say.add_argument("--lexicons", type=_engines, default=(), help=_LEXICONS_HELP)
    say.add_argument("--engines", type=_engines)
    say.set_defaults(func=_say)

    warm = sub.add_parser("warm", help="pre-synthesize hot texts (one per line) into the cache")
    warm.add_argument("file")
    warm.add_argument("-v", "--voice")
    warm.add_argument("-f", "--formats", default="mp3", help="comma-separated formats (default mp3)")
    warm.add_argument("--lexicons", type=_engines, default=(), help=_LEXICONS_HELP)
    warm.add_argument("--engines", type=_engines)
    warm.add_argument("--slots", dest="engine_slots", type=int)
    warm.set_defaults(func=_warm)

    batch = sub.add_parser("batch", help="synthesize every line of FILE into DIR (resumes where it stopped)")
    batch.add_argument("file")
    batch.add_argument("--out", required=True, help="output directory: 00001.mp3, 00002.mp3, ...")
    batch.add_argument("-v", "--voice")
    batch.add_argument("-f", "--format", default="mp3", choices=list(audio.FORMATS))
    batch.add_argument("--lexicons", type=_engines, default=(), help=_LEXICONS_HELP)
    batch.add_argument("--engines", type=_engines)
    batch.add_argument("--slots", dest="engine_slots", type=int)
    batch.set_defaults(func=_batch)

    cache = sub.add_parser("cache", help="inspect or empty the cache")
    cache.add_argument("action", choices=["stats", "purge"])
    cache.add_argument("--all", action="store_true", help="with purge: every entry, not just expired ones")
    cache.set_defaults(func=_cache)

    voices = sub.add_parser("voices", help="list the voice catalogue")
    voices.add_argument("--json", action="store_true")
    voices.add_argument("--engines", type=_engines)
    voices.set_defaults(func=_voices)

    lexicons = sub.add_parser(
        "lexicons", help="check the pronunciation lexicons (as `serve` would at start) and list them"
    )
    lexicons.add_argument("--dir", dest="lexicon_dir", type=Path, help="env TTSD_LEXICON_DIR")
    lexicons.add_argument("--json", action="store_true")
    lexicons.add_argument("--engines", type=_engines)
    lexicons.set_defaults(func=_lexicons)
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
