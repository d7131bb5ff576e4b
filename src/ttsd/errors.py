"""Typed errors. Library code raises these; the API's one handler turns them into statuses,
the CLI into exit codes. Each class carries its HTTP status and a stable machine-readable code.

    TtsdError (500 internal)
    ├── InvalidRequest (422 invalid_request)
    │   ├── EmptyText (422 empty_text)
    │   ├── InvalidText (422 invalid_text)          NUL bytes, lone surrogates
    │   ├── UnknownVoice (422 unknown_voice)
    │   ├── UnknownFormat (422 unknown_format)
    │   ├── UnknownLanguage (422 unknown_language)
    │   ├── UnknownLexicon (422 unknown_lexicon)
    │   ├── UnsupportedLexicon (422 unsupported_lexicon)  its phonemes are in no alphabet the engine reads
    │   ├── UnknownContext (422 unknown_context)   a live message for a context that is not open
    │   ├── InvalidSsml (422 invalid_ssml)         not well-formed (line and column), refused, or bad values
    │   └── IdempotencyConflict (422 idempotency_conflict)  same Idempotency-Key, other body
    ├── MalformedRequest (400 malformed_request)    unparsable JSON
    ├── ConfigError (500 config_error)              bad settings; the CLI exits 2
    ├── TextTooLong (413 text_too_long)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── Unauthorized (401 unauthorized)             API keys are set and none valid was sent
    ├── RateLimited (429 rate_limited, Retry-After)
    ├── TooManyContexts (429 too_many_contexts)    a live socket's contexts are all open; closes it
    ├── IdleTimeout (408 idle_timeout)              a live socket said nothing for too long; closes it
    ├── NotFound (404 not_found)
    │   ├── TaskNotFound (404 task_not_found)
    │   └── AudioNotFound (404 audio_not_found)
    ├── Unavailable (503 unavailable, Retry-After)
    │   ├── Overloaded (503 overloaded)             queue full
    │   ├── NotReady (503 not_ready)                engines still loading
    │   └── BackendUnavailable (503 backend_unavailable)  Redis or the broker unreachable
    └── JobError (500 synthesis_failed)             a job failed; kept on the task for polling
        ├── EngineCrashed (503 engine_crashed)      the engine process died, twice
        ├── JobTimeout (504 job_timeout)
        ├── JobCancelled (409 cancelled)            every streaming listener left
        ├── EngineUnavailable (500 engine_unavailable)  weights or libraries missing
        └── StorageError (503 storage_error)        also Unavailable: transient, with Retry-After
"""

from __future__ import annotations

import math
from typing import Any, ClassVar


class TtsdError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidRequest(TtsdError):
    status = 422
    code = "invalid_request"


class EmptyText(InvalidRequest):
    code = "empty_text"


class InvalidText(InvalidRequest):
    code = "invalid_text"


class UnknownVoice(InvalidRequest):
    code = "unknown_voice"


class UnknownFormat(InvalidRequest):
    code = "unknown_format"


class UnknownLanguage(InvalidRequest):
    code = "unknown_language"


class UnknownLexicon(InvalidRequest):
    code = "unknown_lexicon"


class UnsupportedLexicon(InvalidRequest):
    code = "unsupported_lexicon"


class InvalidSsml(InvalidRequest):
    code = "invalid_ssml"


class UnknownContext(InvalidRequest):
    code = "unknown_context"


class IdempotencyConflict(InvalidRequest):
    code = "idempotency_conflict"


class MalformedRequest(TtsdError):
    status = 400
    code = "malformed_request"


class ConfigError(TtsdError):
    code = "config_error"


class AddressInUse(TtsdError):
    """``ttsd serve``'s address is taken by another listening process."""

    code = "address_in_use"


class TextTooLong(TtsdError):
    status = 413
    code = "text_too_long"


class PayloadTooLarge(TtsdError):
    status = 413
    code = "payload_too_large"


class Unauthorized(TtsdError):
    status = 401
    code = "unauthorized"


class RateLimited(TtsdError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, limit: float, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = max(1, math.ceil(retry_after))
        self.limit = limit


class TooManyContexts(TtsdError):
    status = 429
    code = "too_many_contexts"


class IdleTimeout(TtsdError):
    status = 408
    code = "idle_timeout"


class NotFound(TtsdError):
    status = 404
    code = "not_found"


class TaskNotFound(NotFound):
    code = "task_not_found"


class AudioNotFound(NotFound):
    code = "audio_not_found"


class Unavailable(TtsdError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = max(1, int(retry_after))


class Overloaded(Unavailable):
    code = "overloaded"


class NotReady(Unavailable):
    code = "not_ready"


class EngineDown(Unavailable):
    """A request for an engine whose pool has no live slot (still loading, or failed to)."""

    code = "engine_unavailable"


class BackendUnavailable(Unavailable):
    code = "backend_unavailable"


class JobError(TtsdError):
    code = "synthesis_failed"


class EngineCrashed(JobError):
    status = 503
    code = "engine_crashed"


class JobTimeout(JobError):
    status = 504
    code = "job_timeout"


class JobCancelled(JobError):
    status = 409
    code = "cancelled"


class EngineUnavailable(JobError):
    code = "engine_unavailable"


class StorageError(JobError, Unavailable):
    status = 503
    code = "storage_error"


class EngineOutOfMemory(JobError, Unavailable):
    """The device ran out of memory on a sentence twice: the job fails, the slot lives, and the
    same request may succeed a moment later."""

    status = 503
    code = "engine_out_of_memory"


_JOB_ERRORS: dict[str, type[JobError]] = {
    cls.code: cls
    for cls in (
        JobError,
        EngineCrashed,
        JobTimeout,
        JobCancelled,
        EngineUnavailable,
        StorageError,
        EngineOutOfMemory,
    )
}


def job_error_from(code: str, message: str) -> JobError:
    """Rebuild a job error that crossed a process boundary as (code, message)."""
    return _JOB_ERRORS.get(code, JobError)(message)
