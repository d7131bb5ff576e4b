"""What every command shares: its exit codes, and settings from the environment and its flags."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from ..config import Settings
from ..errors import ConfigError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def settings_from(args: argparse.Namespace, *names: str) -> Settings:
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
