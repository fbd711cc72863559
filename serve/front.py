"""What every front does with an invocation, once: admit it (503 when full), read its body within limits, give it
one request context and deadline, and count it in the metrics. Also the routes both servers have (/metrics)."""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serve.pipeline import RequestContext
from serve.web import RequestError, error_response, read_body

Answer = Callable[[bytes, RequestContext], Awaitable[Response]]
router = APIRouter()


async def invocation(
    request: Request, answer: Answer, top_k: str | None = None, on_error: Callable[[RequestError], Response] = error_response, explain: str | None = None
) -> Response:
    """``answer(body, context)`` for an admitted request; every refusal is a JSON error (``on_error``'s form), every
    outcome is counted."""
    state, started = request.app.state, time.perf_counter()
    settings = state.settings
    try:
        with state.admission.enter() as ticket:
            ctx = RequestContext.from_headers(dict(request.headers), settings.timeout_seconds, top_k=top_k, explain_query=explain, reserve=ticket.reserve)
            body = await read_body(request, settings.max_payload_bytes, min(settings.body_timeout_seconds, ctx.deadline.remaining()))
            response = await answer(body, ctx)
    except RequestError as exc:
        response = on_error(exc)
    except Exception:
        state.metrics.observe_request(500, request.headers.get("content-type"), time.perf_counter() - started)
        raise
    state.metrics.observe_request(response.status_code, request.headers.get("content-type"), time.perf_counter() - started)
    return response


@router.get("/metrics")
async def prometheus(request: Request) -> Response:
    """Prometheus text: invocations by status and content type, latency, batch sizes, model load time."""
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")
