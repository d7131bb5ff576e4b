"""The one place errors become HTTP responses."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import RateLimited, TtsdError, Unauthorized, Unavailable

log = logging.getLogger("ttsd.api")

_HTTP_CODES = {
    400: "malformed_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
}


def error_response(
    status: int, code: str, message: str, *, details: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo the input: it may be huge, or hold lone surrogates that cannot be encoded.
    return [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": err.get("type"),
        }
        for err in exc.errors()
    ]


def install(app: FastAPI, *, debug: bool) -> None:
    @app.exception_handler(TtsdError)
    async def ttsd_error(_: Request, exc: TtsdError) -> JSONResponse:
        headers: dict[str, str] | None = None
        if isinstance(exc, Unavailable):
            headers = {"Retry-After": str(exc.retry_after)}
        elif isinstance(exc, RateLimited):
            headers = {
                "Retry-After": str(exc.retry_after),
                "RateLimit-Limit": f"{exc.limit:g}",
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(exc.retry_after),
            }
        elif isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": 'Bearer realm="ttsd"'}
        if exc.status >= 500 and not isinstance(exc, Unavailable):
            log.warning("request failed", extra={"code": exc.code, "status": exc.status})
        return error_response(exc.status, exc.code, exc.message, details=exc.details, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        if any(d["type"] == "json_invalid" for d in details):
            return error_response(400, "malformed_request", "the body is not valid JSON", details=details)
        summary = "; ".join(f"{'.'.join(d['loc'][1:]) or 'body'}: {d['msg']}" for d in details[:5])
        return error_response(422, "invalid_request", summary or "invalid request", details=details)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        details = traceback.format_exception(exc) if debug else None
        return error_response(500, "internal", "internal server error", details=details)
