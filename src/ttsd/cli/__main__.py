"""``python -m ttsd.cli``, as the worker starts one node per pool (and tests and benches start ttsd)."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
