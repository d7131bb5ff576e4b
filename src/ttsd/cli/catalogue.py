"""``ttsd voices`` and ``ttsd lexicons``: what the catalogue holds, read as the service reads it."""

from __future__ import annotations

import argparse
import json
import sys

from .base import EXIT_OK, settings_from


def voices_command(args: argparse.Namespace) -> int:
    from ..voices import Catalogue

    settings = settings_from(args, "engines")
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


def lexicons_command(args: argparse.Namespace) -> int:
    """Read and compile TTSD_LEXICON_DIR as the service would at start (errors exit 2), and list it."""
    from ..voices import Catalogue

    settings = settings_from(args, "engines", "lexicon_dir")
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
