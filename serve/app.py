"""The single-model server (FastAPI): SageMaker's /ping and /invocations, and the Open Inference Protocol's /v2
routes (``serve.oip_routes``), over the one request pipeline."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from byoc_contract.messages import one_line
from serve import invocations, memory, oip_routes
from serve.artifact import ModelSpec, load_failure
from serve.http_common import RequestError, add_error_handlers, error_response
from serve.limits import Admission, Uploads
from serve.metrics import Metrics
from serve.pipeline import Pipeline, RequestContext, Transformer
from serve.runtime import Runtime
from serve.settings import Settings
from serve.shutdown import DRAIN
from serve.user_code import user_module

log = logging.getLogger("serve")
PAGE = Path(__file__).with_name("static") / "index.html"
router = APIRouter()


class ModelState:
    """Loads the model in a background thread, so /ping can answer 503 (with the reason) until it is ready."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.pipeline: Pipeline | None = None
        self.error: str | None = None  # what clients are told: no paths, no runtime text
        self.cause: str | None = None  # what the log says

    def load(self, loop: asyncio.AbstractEventLoop) -> None:
        settings, started = self.settings, time.perf_counter()
        try:
            module = user_module(
                settings.model_dir, settings.program, settings.code_packages_dir, settings.requirements_timeout_seconds
            )
            pipeline = Pipeline(Transformer(settings, module), settings, self.metrics)
        except Exception as exc:  # the log has the reason; /ping says it failed without paths; the server stays up
            self.error, self.cause = load_failure(exc), one_line(exc, 2000)
            log.error("model failed to load from %s: %s", settings.model_dir, self.cause)
            return
        self.metrics.load.set(time.perf_counter() - started)
        loop.call_soon_threadsafe(self.open, pipeline)
        log.info("model loaded and warmed up in %.2f s; ready", time.perf_counter() - started)

    def open(self, pipeline: Pipeline) -> None:
        pipeline.start()
        self.pipeline = pipeline

    def ready_pipeline(self) -> Pipeline:
        if self.pipeline is None:
            raise RequestError(
                503,
                "not ready",
                self.error or "The model is still loading; retry when /ping answers 200.",
                {"Retry-After": "5"},
            )
        return self.pipeline


class SingleModel:
    """The Open Inference Protocol's view of this server (``serve.oip_routes.Repository``): one model,
    ``SERVE_MODEL_NAME``."""

    def __init__(self, model: ModelState, name: str):
        self.model, self.name = model, name

    async def index(self) -> list[dict]:
        state = "READY" if self.model.pipeline else "UNAVAILABLE" if self.model.error else "LOADING"
        return [{"name": self.name, "version": "1", "state": state, "reason": self.model.error or ""}]

    async def ready(self) -> str | None:
        return None if self.model.pipeline else self.model.error or "The model is still loading."

    async def spec(self, name: str) -> ModelSpec:
        return self.pipeline(name).transformer.spec_for_protocol()

    async def infer(self, name: str, body: bytes, ctx: RequestContext) -> Response:
        content, media_type = await self.pipeline(name).transform(body, ctx)
        return oip_routes.inference_response(content, media_type)

    def pipeline(self, name: str) -> Pipeline:
        if name != self.name:
            raise RequestError(
                404, "model not found", f"This server serves the model {self.name!r} (SERVE_MODEL_NAME), not {name!r}."
            )
        return self.model.ready_pipeline()


@asynccontextmanager
async def lifespan(app: FastAPI):
    model: ModelState = app.state.model
    threading.Thread(target=model.load, args=(asyncio.get_running_loop(),), name="model-loader", daemon=True).start()
    yield
    if model.pipeline is not None:
        await model.pipeline.stop()


@router.get("/ping")
async def ping(request: Request) -> Response:
    """200 once the model is loaded and warmed up; 503 before, or with the reason it failed. Answered on the event
    loop from state, so it never waits behind decoding or prediction."""
    model: ModelState = request.app.state.model
    if DRAIN.draining:
        return error_response(RequestError(503, "shutting down", "This server is shutting down.", {"Retry-After": "1"}))
    if model.pipeline is not None:
        return JSONResponse({"status": "ready"})
    if model.error:
        return error_response(RequestError(503, "model failed to load", model.error))
    return error_response(RequestError(503, "loading", "The model is still loading."))


@router.post("/invocations")
async def classify(request: Request, top_k: str | None = None, explain: str | None = None) -> Response:
    """Classify the image(s) in the body; see the README for content and Accept types and the limits."""
    pipeline = request.app.state.model.ready_pipeline()

    async def answer(body: bytes, ctx: RequestContext) -> Response:
        content, media_type = await pipeline.transform(body, ctx)
        return Response(content, media_type=media_type)

    return await invocations.invocation(request, answer, top_k, explain=explain)


@router.get("/model")
async def model_description(request: Request) -> JSONResponse:
    """What is loaded, for the web page: architecture, classes, test accuracy, calibration, training date, the runtime
    and precision serving it, and the int8 gate's measurements."""
    transformer = request.app.state.model.ready_pipeline().transformer
    if transformer.spec is None:
        raise RequestError(
            404, "no model description", "This model is loaded by code/inference.py's model_fn without model.json."
        )
    explains = transformer.cam is not None and getattr(transformer.model, "explains", False)
    return JSONResponse(describe(transformer.spec, explains, transformer.model, transformer.decoder.decoding))


@router.get("/", response_class=HTMLResponse)
async def index() -> str:
    """A page where a person picks or drops an image and sees the top-5 labels and the latency."""
    return PAGE.read_text()


INT8_SUMMARY = ("shipped", "passed_gate", "split", "images", "agreement", "accuracy_fp32", "accuracy_int8", "reason")


def describe(spec: ModelSpec, explains: bool, model: object, decode: str) -> dict:
    """The page's summary of ``model.json``, with how the loaded ``model`` serves it: which runtime, in which
    precision (SERVE_PRECISION=auto's choice), how images are decoded (SERVE_DECODE's), and what training's int8
    gate measured."""
    info = spec.info or {}
    metrics, calibration, gate = info.get("metrics") or {}, info.get("calibration"), info.get("int8")
    accuracy = metrics.get("test_acc", metrics.get("valid_acc"))
    return {
        "architecture": spec.architecture,
        "classes": spec.classes,
        "test_accuracy": accuracy if isinstance(accuracy, (int, float)) else None,
        "calibration": {k: calibration[k] for k in ("temperature", "ece_before", "ece_after")} if calibration else None,
        "trained": str(info.get("created", ""))[:10] or None,
        "explanations": explains,
        "explain_reason": None if explains else explain_reason(spec),
        "serving": {
            "runtime": model.name,
            "precision": model.precision,
            "recheck_margin": getattr(model, "recheck_margin", 0.0),
        }
        if isinstance(model, Runtime)
        else None,
        "decode": {"serving": decode, "training": spec.decode},
        "int8": {k: gate.get(k) for k in INT8_SUMMARY} if isinstance(gate, dict) else None,
    }


def explain_reason(spec: ModelSpec) -> str:
    """Why a server does not explain: the artifact lacks the CAM outputs, or its runtime or user code does not run
    them."""
    return spec.explain_reason if spec.cam_file is None else "this runtime does not compute them"


def create_app(settings: Settings) -> FastAPI:
    """The server for one model folder; the model loads in the background when the app starts."""
    app = FastAPI(title="byoc-vision", summary="Image classification, SageMaker endpoint contract", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.admission = Admission(settings.max_concurrent_requests, settings.max_queued_images)
    app.state.uploads = Uploads(settings.max_concurrent_uploads, settings.max_upload_buffer_bytes)
    app.state.trimmer = memory.Trimmer(settings.malloc_trim)
    app.state.model = ModelState(settings, app.state.metrics)
    app.state.repository = SingleModel(app.state.model, settings.model_name)
    add_error_handlers(app)
    app.include_router(router)
    app.include_router(invocations.router)
    app.include_router(oip_routes.router)
    return app
