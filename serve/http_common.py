"""HTTP plumbing every front shares: the error type and its JSON body, reading a body within limits, and the
exception handlers that give every error (the framework's own 404/405/422 included) the same shape."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

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


def internal_error(where: str) -> RequestError:
    """A generic 500 for an unexpected exception (call it from an ``except`` block): the details go to the log under
    a request id, the client gets only that id, never the exception's text (paths, addresses, internals)."""
    request_id = uuid.uuid4().hex[:16]
    log.exception("%s failed (request id %s)", where, request_id)
    detail = (
        f"The server failed on this request; the log has the details under request id {request_id}. Retry, or "
        "report that id."
    )
    return RequestError(500, "internal error", detail, {"X-Request-Id": request_id})


def whole_number(text: str, max_digits: int = 18) -> int | None:
    """``text`` as a non-negative integer of ASCII digits ('²' is a digit to str.isdigit, not to int), else None."""
    text = text.strip()
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def declared_length(request: Request) -> int | None:
    """The Content-Length header as a number, or None when absent or malformed."""
    return whole_number(request.headers.get("content-length") or "")


async def read_body(
    request: Request,
    limit: int,
    timeout: float,
    min_rate: float = 0.0,
    grace: float = 2.0,
    grow: Callable[[int], None] = lambda n: None,
) -> bytes:
    """The body: 413 as soon as it is known to exceed ``limit`` bytes; 408 when it takes over ``timeout`` s in all,
    or when, after ``grace`` s, it arrives slower than ``min_rate`` bytes/s on average (a stalled upload). ``grow``
    is told of every chunk (the upload budget). A client that hangs up is one log line and a 400."""
    declared = declared_length(request)
    detail = (
        f"The body exceeds {limit / (1024 * 1024):g} MB (SAGEMAKER_MAX_PAYLOAD_IN_MB); send larger inputs to an "
        "asynchronous endpoint (up to 1 GB, in S3)."
    )
    too_large = RequestError(
        413, "payload too large", detail, {"Connection": "close"}
    )  # the rest of the body is never read
    if declared is not None and declared > limit:
        raise too_large
    started = time.monotonic()
    parts, size, stream = [], 0, request.stream().__aiter__()
    while True:
        now = time.monotonic()
        cutoff = min(started + timeout, started + grace + size / min_rate) if min_rate > 0 else started + timeout
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(cutoff - now, 0.0))
        except StopAsyncIteration:
            return b"".join(parts)
        except TimeoutError:
            slow = time.monotonic() - started < timeout
            why = (
                f"arrived slower than {min_rate / 1024:g} kB/s (SERVE_MIN_BODY_RATE_KBPS)"
                if slow
                else f"did not arrive within {timeout:g} s (SERVE_BODY_READ_TIMEOUT_SECONDS)"
            )
            raise RequestError(
                408, "request timeout", f"The body {why}; send it in one go.", {"Connection": "close"}
            ) from None
        except ClientDisconnect:
            log.info("client %s hung up before sending its whole body (%d bytes read)", client_address(request), size)
            raise RequestError(
                400, "client disconnected", "The client closed the connection before the body was complete."
            ) from None
        size += len(chunk)
        if size > limit:
            raise too_large
        grow(len(chunk))
        parts.append(chunk)


def client_address(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


def add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON ``{"error", "detail"}``: ours with their status, the framework's 4xx, anything else a
    generic 500 with a request id (``CatchAll``)."""

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

    app.add_middleware(CatchAll)


class CatchAll:
    """ASGI middleware: an exception no handler took is one logged traceback under a request id and a generic 500
    (Starlette's own last-resort handler would re-raise it, and the server would log it a second time)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            error = internal_error(f"{scope.get('method')} {scope.get('path')}")
            if not started:
                await error_response(error)(scope, receive, send)
