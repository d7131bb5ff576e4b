"""What a native library prints to the process's stderr, logged through ttsd's logging instead."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_logged(log: logging.Logger) -> Iterator[None]:
    """Each line written to file descriptor 2 while the block runs becomes a log record.

    TensorFlow Lite's C++ logger writes its INFO lines there whatever ``TF_CPP_MIN_LOG_LEVEL``
    says, and a JSON log must stay all JSON for whatever ingests it. The descriptor is the
    process's, so a line another thread logs meanwhile is captured too: it comes out as a record
    of its own, never lost.
    """
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                if line.strip():
                    log.info("engine library output", extra={"line": line.strip()})
