"""The cache tools: ``ttsd warm`` and ``ttsd batch`` fill it from a file of texts (batch also
writes each text's audio to a directory), ``ttsd cache`` inspects or empties it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import Settings
from ..errors import ConfigError
from ..tenants import Tenants
from .base import EXIT_ERROR, EXIT_OK, settings_from
from .progress import Progress


def warm_command(args: argparse.Namespace) -> int:
    import asyncio

    from ..prepare import SynthesisRequest
    from ..tools import Result, read_lines, synthesize_all

    settings = settings_from(args, "engines", "engine_slots")
    texts = read_lines(Path(args.file))
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    scope = tenant_scope(settings, args.tenant)
    requests = [
        SynthesisRequest(
            text=t,
            voice=args.voice,
            format=f,
            lexicons=args.lexicons,
            sample_rate=args.sample_rate,
            text_type=args.text_type,
            scope=scope,
        )
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


def tenant_scope(settings: Settings, tenant: str | None) -> str:
    """The cache a tool fills: the shared one, or (``--tenant``) a tenant's own under
    TTSD_CACHE_SCOPE=tenant."""
    if tenant is None:
        return ""
    if settings.cache_scope != "tenant":
        raise ConfigError("--tenant fills a tenant's own cache: it needs TTSD_CACHE_SCOPE=tenant")
    names = Tenants.parse(settings.api_keys).names
    if tenant not in names:
        raise ConfigError(
            f"no tenant {tenant!r} in TTSD_API_KEYS; known: {', '.join(sorted(names)) or 'none'}"
        )
    return tenant


def batch_command(args: argparse.Namespace) -> int:
    import asyncio

    from ..prepare import SynthesisRequest
    from ..tools import Result, fetch, read_lines, synthesize_all, write_atomically

    settings = settings_from(args, "engines", "engine_slots")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = read_lines(Path(args.file))
    ext = "raw" if args.format == "pcm" else args.format
    targets = [out / f"{i + 1:05d}.{ext}" for i in range(len(texts))]
    scope = tenant_scope(settings, args.tenant)
    requests = [
        SynthesisRequest(
            text=t,
            voice=args.voice,
            format=args.format,
            lexicons=args.lexicons,
            sample_rate=args.sample_rate,
            text_type=args.text_type,
            scope=scope,
        )
        for t in texts
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


def cache_command(args: argparse.Namespace) -> int:
    from ..tools import cache_stats, purge

    settings = settings_from(args)
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
