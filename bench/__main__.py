"""Benchmarks: ``python -m bench [scenario ...]``. Results go to bench/results/."""

from __future__ import annotations

import sys

from . import (
    capacity,
    chaos,
    distributed,
    first_audio,
    hits,
    index,
    lexicons,
    live,
    overload,
    pools,
    reuse,
    round_trips,
    scope,
    soak,
    ssml,
    suite,
)

SCENARIOS = {
    "all": suite.run,
    "first_audio": first_audio.run,
    "overload": overload.run,
    "hits": hits.run,
    "reuse": reuse.run,
    "chaos": chaos.run,
    "pools": pools.run,
    "lexicons": lexicons.run,
    "distributed": distributed.run,
    "round_trips": round_trips.run,
    "capacity": capacity.run,
    "ssml": ssml.run,
    "index": index.run,
    "soak": soak.run,
    "scope": scope.run,
    "live": live.run,
}


def main(argv: list[str]) -> int:
    names = argv or ["all"]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    for name in names:
        SCENARIOS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
