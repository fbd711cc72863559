"""What every front does with an invocation, once: read its body within the upload limits, admit it (503 when
full or shutting down), give it one request context and deadline, and count it in the metrics. Also the routes
both servers have (/metrics)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serve.http_common import RequestError, declared_length, error_response, internal_error, read_body
from serve.pipeline import RequestContext
from serve.settings import Settings
from serve.shutdown import DRAIN

Answer = Callable[[bytes, RequestContext], Awaitable[Response]]
router = APIRouter()


async def invocation(
    request: Request,
    answer: Answer,
    top_k: str | None = None,
    on_error: Callable[[RequestError], Response] = error_response,
    explain: str | None = None,
) -> Response:
    """``answer(body, context)`` for an admitted request; every refusal is a JSON error (``on_error``'s form), every
    outcome is counted. The body is read first, under the upload limits, and only then is the request admitted:
    a client that stalls mid-body never holds an inference slot."""
    state, started = request.app.state, time.perf_counter()
    settings = state.settings
    arrived = time.monotonic()
    try:
        with DRAIN.request():
            body = await read_request_body(request, settings)
            with state.admission.enter() as ticket:
                ctx = RequestContext.from_headers(
                    dict(request.headers),
                    settings.timeout_seconds,
                    top_k=top_k,
                    explain_query=explain,
                    reserve=ticket.reserve,
                    started=arrived,
                )
                response = await answer(body, ctx)
    except RequestError as exc:
        response = on_error(exc)
    except Exception:
        response = on_error(internal_error(f"{request.method} {request.url.path}"))
    state.metrics.observe_request(
        response.status_code, request.headers.get("content-type"), time.perf_counter() - started
    )
    state.trimmer.after_request(declared_length(request) or 0, idle=DRAIN.active == 0)
    return response


async def read_request_body(request: Request, settings: Settings) -> bytes:
    """The body within the payload limit, the upload slots and budget, the minimum data rate, and the body read
    timeout (never past the request's own)."""
    with request.app.state.uploads.enter() as upload:
        seconds = min(settings.body_timeout_seconds, settings.timeout_seconds)
        return await read_body(request, settings.max_payload_bytes, seconds, settings.min_body_rate, grow=upload.grow)


@router.get("/metrics")
async def prometheus(request: Request) -> Response:
    """Prometheus text: invocations by status and content type, latency, batch sizes, model load time."""
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")
