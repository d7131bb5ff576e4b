"""Logging setup: JSON lines or human-readable console output, with ``extra=`` fields kept.

The access log (``ttsd.access``, a line per request) has a handler of its own that writes its lines
in batches: at thousands of requests a second, a write system call per line costs more than
answering the request. Lines reach the stream at most ``ACCESS_FLUSH_SECONDS`` later; warnings
and errors are never held back.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from typing import Any, TextIO

import orjson

from .config import Settings

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
ACCESS_FLUSH_SECONDS = 0.1


class EventFormatter(logging.Formatter):
    """Formats a record, or the same fields given directly (``event``): the access log's lines
    are made without a LogRecord, whose making costs more than a cache hit."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return self.event(record.created, record.levelname, record.name, record.getMessage(), fields, exc)

    def event(
        self, created: float, level: str, logger: str, message: str, fields: dict[str, Any], exc: str | None
    ) -> str:
        raise NotImplementedError


class JsonFormatter(EventFormatter):
    def event(
        self, created: float, level: str, logger: str, message: str, fields: dict[str, Any], exc: str | None
    ) -> str:
        event = {"ts": round(created, 3), "level": level.lower(), "logger": logger, "event": message}
        event.update(fields)
        if exc is not None:
            event["exc"] = exc
        return orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class ConsoleFormatter(EventFormatter):
    def event(
        self, created: float, level: str, logger: str, message: str, fields: dict[str, Any], exc: str | None
    ) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(created))
        line = f"{stamp} {level:<7} {logger}: {message}"
        if fields:
            line = f"{line}  " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line if exc is None else f"{line}\n{exc}"


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Collects formatted lines and writes them together, from a flusher thread or when a warning
    comes. ``logging.shutdown`` (at exit) flushes what is left."""

    def __init__(self, stream: TextIO, interval: float = ACCESS_FLUSH_SECONDS) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._interval = interval
        self._start_flusher()
        os.register_at_fork(after_in_child=self._start_flusher)  # threads do not survive a fork

    def _start_flusher(self) -> None:
        # The thread holds the handler weakly and ends once it is dropped. Closing does not end it:
        # logging.config.dictConfig (which uvicorn and granian call) closes every handler, and
        # this one stays attached to its logger all the same.
        ref = weakref.ref(self)
        threading.Thread(
            target=_flush_forever, args=(ref, self._interval), name="ttsd-log-flush", daemon=True
        ).start()

    def add(self, line: str) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record))
            if record.levelno >= logging.WARNING:
                self.flush()
        except Exception:  # noqa: BLE001 -- as logging.StreamHandler: a log line never raises
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                lines, self._pending = self._pending, []
                try:
                    self.stream.write("\n".join(lines) + "\n")
                except (OSError, ValueError):
                    return  # the stream is gone (closed at exit): nothing left to write to
            super().flush()


def _flush_forever(ref: weakref.ref[BatchingStreamHandler], interval: float) -> None:
    while True:
        time.sleep(interval)
        handler = ref()
        if handler is None:
            return
        handler.flush()
        del handler


def configure_logging(settings: Settings) -> None:
    formatter = JsonFormatter() if settings.log_format == "json" else ConsoleFormatter()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger("ttsd")
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    root.propagate = False
    access = logging.getLogger("ttsd.access")
    for old in access.handlers:
        old.flush()
    batching = BatchingStreamHandler(sys.stderr)
    batching.setFormatter(formatter)
    access.handlers[:] = [batching]
    access.propagate = False


def adopt(*names: str, level: int | str | None = None) -> None:
    """Libraries' loggers write through ttsd's handler (``configure_logging`` set it), so a
    process's stream is in one format and a JSON log parses line by line; ``py.warnings`` takes
    Python's warnings. They log at ``level`` if given, else at ttsd's."""
    ours = logging.getLogger("ttsd")
    if "py.warnings" in names:
        logging.captureWarnings(True)
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers[:] = ours.handlers
        logger.setLevel(ours.level if level is None else level)
        logger.propagate = False


_ACCESS = logging.getLogger("ttsd.access")


def log_request(fields: dict[str, Any]) -> None:
    """One access-log line (``event: request``) with these fields, as ``_ACCESS.info`` would
    write it, made directly where the handler is the batching one ``configure_logging`` set."""
    if not _ACCESS.isEnabledFor(logging.INFO):
        return
    for handler in _ACCESS.handlers:
        formatter = handler.formatter
        if not (isinstance(handler, BatchingStreamHandler) and isinstance(formatter, EventFormatter)):
            _ACCESS.info("request", extra=fields)
            return
        handler.add(formatter.event(time.time(), "INFO", _ACCESS.name, "request", fields, None))
