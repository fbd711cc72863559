"""HTTP plumbing every front shares: the error type and its JSON body, reading a body within limits, and the
exception handlers that give every error (the framework's own 404/405/422 included) the same shape."""
from __future__ import annotations

import asyncio
import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

log = logging.getLogger("serve")


class RequestError(Exception):
    """A request the server cannot serve: answered with ``status`` and ``{"error": error, "detail": detail}``."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail, self.headers = status, error, detail, headers or {}

    def body(self) -> bytes:
        return error_body(self.error, self.detail)


def error_body(error: str, detail: str) -> bytes:
    return json.dumps({"error": error, "detail": detail}).encode()


def error_response(exc: RequestError) -> Response:
    return Response(exc.body(), status_code=exc.status, media_type="application/json", headers=exc.headers)


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body: 413 as soon as it is known to exceed ``limit`` bytes, 408 when it takes over ``timeout`` s to arrive."""
    declared = request.headers.get("content-length")
    detail = f"The body exceeds {limit // (1024 * 1024)} MB (SAGEMAKER_MAX_PAYLOAD_IN_MB)."
    too_large = RequestError(413, "payload too large", detail, {"Connection": "close"})  # the rest of the body is never read
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large

    async def chunks() -> bytes:
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            parts.append(chunk)
        return b"".join(parts)

    try:
        return await asyncio.wait_for(chunks(), timeout)
    except asyncio.TimeoutError:
        detail = f"The body did not arrive within {timeout:g} s (SERVE_BODY_READ_TIMEOUT_SECONDS); send it in one go."
        raise RequestError(408, "request timeout", detail, {"Connection": "close"}) from None


def add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON ``{"error", "detail"}``: ours with their status, the framework's 4xx, anything else a 500."""

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, exc: RequestError) -> Response:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> Response:
        error = {404: "not found", 405: "method not allowed"}.get(exc.status_code, "bad request")
        return error_response(RequestError(exc.status_code, error, str(exc.detail), dict(exc.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error_response(RequestError(400, "bad request", detail))

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return JSONResponse({"error": "internal error", "detail": f"{type(exc).__name__}: {exc}"}, status_code=500)
