"""The HTTP front (FastAPI): SageMaker's /ping and /invocations over decode -> predict -> encode."""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from serve.artifact import load_spec
from serve.batching import Batcher
from serve.decode import RequestError, decode, decode_image, media_type
from serve.encode import choose_accept, encode, parse_top_k
from serve.fetch import fetch_image
from serve.handler import Handler, load_model, user_module
from serve.metrics import Metrics
from serve.settings import Settings

log = logging.getLogger("serve")
PAGE = Path(__file__).with_name("static") / "index.html"


class ModelHolder:
    """Loads the model in the background, so /ping can answer 503 until it is loaded and warmed up."""

    def __init__(self, metrics: Metrics):
        self.model = None
        self.handler: Handler | None = None
        self.error: str | None = None
        self.ready = threading.Event()
        self.metrics = metrics

    def load(self, settings: Settings) -> None:
        try:
            started = time.perf_counter()
            module = user_module(settings)
            if module is not None:
                self.handler = Handler(settings, module)
            else:
                self.model = load_model(settings, load_spec(settings.model_dir))
            self.metrics.load.set(time.perf_counter() - started)
            log.info("model loaded and warmed up in %.2f s; ready", time.perf_counter() - started)
            self.ready.set()
        except Exception as exc:  # reported on /ping and in the log; the server stays up to say why
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.error)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes (before reading it all)."""
    declared = request.headers.get("content-length")
    too_large = RequestError(413, "payload too large", f"The body exceeds {limit // (1024 * 1024)} MB (SAGEMAKER_MAX_PAYLOAD_IN_MB).")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def multipart_image(request: Request, body: bytes) -> bytes:
    """The first file of a multipart/form-data body (the web page's upload)."""

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form()
    for value in form.values():
        if hasattr(value, "read"):
            return await value.read()
    raise RequestError(400, "no file", "The multipart form has no file field; attach the image as a file.")


def add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON ``{"error", "detail"}``: ours with their 4xx status, anything unexpected as a 500."""

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return JSONResponse({"error": "internal error", "detail": f"{type(exc).__name__}: {exc}"}, status_code=500)


def create_app(settings: Settings) -> FastAPI:
    """The server for one model folder; the model loads in the background when the app starts."""
    metrics = Metrics()
    fetch = functools.partial(fetch_image, max_bytes=settings.max_payload_bytes) if settings.allow_image_urls else None
    holder = ModelHolder(metrics)
    batcher = Batcher(lambda batch: holder.model.predict(batch), settings.max_batch_images, settings.max_batch_delay_ms / 1000, metrics.batch.observe)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        threading.Thread(target=holder.load, args=(settings,), name="model-loader", daemon=True).start()
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="byoc-vision", summary="Image classification, SageMaker endpoint contract", lifespan=lifespan)
    app.state.holder = holder

    @app.middleware("http")
    async def count_invocations(request: Request, call_next):
        if request.url.path != "/invocations":
            return await call_next(request)
        started = time.perf_counter()
        response = await call_next(request)
        metrics.observe_request(response.status_code, request.headers.get("content-type"), time.perf_counter() - started)
        return response

    add_error_handlers(app)

    @app.get("/ping")
    def ping() -> JSONResponse:
        """200 once the model is loaded and a warm-up inference has run; 503 before (or if loading failed)."""
        if holder.ready.is_set():
            return JSONResponse({"status": "ready"})
        if holder.error:
            return JSONResponse({"error": "model failed to load", "detail": holder.error}, status_code=503)
        return JSONResponse({"error": "loading", "detail": "The model is still loading."}, status_code=503)

    @app.post("/invocations")
    async def invocations(request: Request, top_k: str | None = None) -> Response:
        """Classify the image(s) in the body; see the README for content and Accept types."""
        if not holder.ready.is_set():
            raise RequestError(503, "not ready", holder.error or "The model is still loading; retry when /ping answers 200.")
        body = await read_body(request, settings.max_payload_bytes)
        content_type = request.headers.get("content-type")
        if holder.handler is not None:
            return await run_handler(holder.handler, request, body, content_type)
        model = holder.model
        if media_type(content_type) == "multipart/form-data":
            image = await run_in_threadpool(decode_image, await multipart_image(request, body), model.spec, settings.max_pixels)
            batch, lines = image[None], False
        else:
            batch, lines = await run_in_threadpool(decode, body, content_type, model.spec, settings.max_pixels, fetch)
        k = parse_top_k(top_k, request.headers.get("x-amzn-sagemaker-custom-attributes"), settings.default_top_k, len(model.spec.classes))
        accept = choose_accept(request.headers.get("accept"), lines)
        try:
            probabilities = await asyncio.wait_for(batcher.submit(batch), settings.timeout_seconds)
        except asyncio.TimeoutError:
            raise RequestError(504, "timeout", f"Inference took longer than {settings.timeout_seconds} s (SAGEMAKER_MODEL_SERVER_TIMEOUT).") from None
        return Response(encode(probabilities, model.spec.classes, k, accept), media_type=accept)

    async def run_handler(handler: Handler, request: Request, body: bytes, content_type: str | None) -> Response:
        """The user's handler functions; their own errors are 500s with the reason, ours stay 4xx."""
        try:
            result, response_type = await asyncio.wait_for(
                run_in_threadpool(handler.transform, body, content_type, request.headers.get("accept"), dict(request.headers)), settings.timeout_seconds
            )
        except asyncio.TimeoutError:
            raise RequestError(504, "timeout", f"The handler took longer than {settings.timeout_seconds} s (SAGEMAKER_MODEL_SERVER_TIMEOUT).") from None
        except RequestError:
            raise
        except Exception as exc:
            log.exception("the handler in code/%s failed", settings.program)
            raise RequestError(500, "handler error", f"{type(exc).__name__}: {exc}") from exc
        return Response(result, media_type=response_type)

    page = PAGE.read_text()

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        """A page where a person picks or drops an image and sees the top-5 labels and the latency."""
        return page

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus text: invocations by status and content type, latency, batch sizes, model load time."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn (``serve.app:app_from_env``), configured by the environment."""
    settings = Settings.from_env()
    if settings.multi_model:
        from serve.mme import create_mme_app

        return create_mme_app(settings)
    return create_app(settings)
