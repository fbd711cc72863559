"""The Open Inference Protocol's REST routes (KServe V2, Triton's extensions for binary tensors and the repository
index), beside SageMaker's. Both servers mount them; each app's ``state.repository`` says which models it has and
runs their requests through its one request pipeline (``serve.app.SingleModel``, ``serve.mme.MultiModel``)."""

from __future__ import annotations

import json
from importlib import metadata
from typing import Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serve import invocations, oip_bodies
from serve.artifact import ModelSpec
from serve.http_common import RequestError, read_body
from serve.pipeline import OPEN_INFERENCE, RequestContext

router = APIRouter(prefix="/v2")
EXTENSIONS = ["binary_tensor_data", "model_repository"]
INDEX_REQUEST_BYTES = 64 * 1024  # {"ready": true}


class Repository(Protocol):
    """What the routes need from a server: its models, their state and specs, and a way to run a request."""

    async def index(self) -> list[dict]:
        """``[{"name", "version", "state", "reason"}]``: state READY, LOADING or UNAVAILABLE."""

    async def ready(self) -> str | None:
        """None when the server can serve, else why not."""

    async def spec(self, name: str) -> ModelSpec:
        """The loaded model's spec; RequestError 404 for an unknown model, 503 for one not ready."""

    async def infer(self, name: str, body: bytes, ctx: RequestContext) -> Response:
        """The body through the model's request pipeline, as the protocol's response."""


def protocol_error(exc: RequestError) -> Response:
    """Every error of these routes in the protocol's ``{"error": "..."}`` form, with our status."""
    return Response(
        oip_bodies.error_body(exc), status_code=exc.status, media_type="application/json", headers=exc.headers
    )


def repository(request: Request) -> Repository:
    return request.app.state.repository


@router.get("")
async def server_metadata() -> JSONResponse:
    return JSONResponse({"name": "byoc-vision", "version": metadata.version("byoc-vision"), "extensions": EXTENSIONS})


@router.get("/health/live")
async def live() -> JSONResponse:
    return JSONResponse({"live": True})


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    reason = await repository(request).ready()
    return JSONResponse({"ready": True}) if reason is None else protocol_error(RequestError(503, "not ready", reason))


@router.post("/repository/index")
async def repository_index(request: Request) -> JSONResponse:
    """Triton's repository index: every model with its state (the body's ``ready`` filter is honoured)."""
    models = await repository(request).index()
    try:
        wanted = json.loads(
            await read_body(request, INDEX_REQUEST_BYTES, request.app.state.settings.body_timeout_seconds) or b"{}"
        )
    except (ValueError, RecursionError):
        wanted = {}
    if isinstance(wanted, dict) and wanted.get("ready") is True:
        models = [m for m in models if m["state"] == "READY"]
    return JSONResponse(models)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(name: str, request: Request, version: str | None = None) -> Response:
    try:
        check_version(version)
        spec = await repository(request).spec(name)
    except RequestError as exc:
        return protocol_error(exc)
    return JSONResponse(
        {
            "name": name,
            "versions": ["1"],
            "platform": "byoc-vision",
            "inputs": oip_bodies.input_metadata(spec),
            "outputs": oip_bodies.output_metadata(spec),
        }
    )


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(name: str, request: Request, version: str | None = None) -> Response:
    try:
        check_version(version)
        await repository(request).spec(name)
    except RequestError as exc:
        return protocol_error(exc)
    return JSONResponse({"name": name, "ready": True})


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    """Classify the images (BYTES) or the preprocessed tensor (FP32) of an inference request."""
    try:
        check_version(version)
    except RequestError as exc:
        return protocol_error(exc)

    async def answer(body: bytes, ctx: RequestContext) -> Response:
        ctx.protocol, ctx.model_name = OPEN_INFERENCE, name
        return await repository(request).infer(name, body, ctx)

    return await invocations.invocation(request, answer, on_error=protocol_error)


def check_version(version: str | None) -> None:
    if version not in (None, "", "1"):
        raise RequestError(
            404,
            "unknown model version",
            f"Version {version!r} is not served; each model has version 1 (or leave the version out).",
        )


def inference_response(content: bytes, media_type: str) -> Response:
    """The encoded result with the binary extension's header length."""
    return Response(content, media_type=media_type, headers=oip_bodies.response_headers(content, media_type))
