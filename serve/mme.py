"""Multi-model endpoints (``SAGEMAKER_MULTI_MODEL=true``): SageMaker's MME API in front of multi-model-server.

multi-model-server (``serve.mms_backend``, on 127.0.0.1 only) loads, unloads and runs the models with our
handler service, which runs the same request pipeline as ``/invocations`` (``serve.pipeline``). This front
checks load requests (the folder must be under /opt/ml/models; requirements are installed here, so a failure
answers the load request), admits and reads invocations as /invocations does, and forwards them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from serve import invocations, memory, oip_bodies, oip_routes, privileges
from serve.artifact import ArtifactError, ModelSpec, load_spec
from serve.http_common import RequestError, add_error_handlers, error_response, read_body
from serve.limits import Admission, Uploads
from serve.metrics import Metrics
from serve.mms_service import ORIGINAL_CONTENT_TYPE, PROTOCOL
from serve.pipeline import RequestContext
from serve.runtime import model_file
from serve.settings import MODEL_NAME, Settings
from serve.shutdown import DRAIN
from serve.user_code import RequirementsError, install_requirements

log = logging.getLogger("serve")
FORWARDED_HEADERS = ("content-type", "accept", "x-amzn-sagemaker-custom-attributes")
LOAD_TIMEOUT_SECONDS = 600.0
LOAD_REQUEST_BYTES = 64 * 1024  # {"model_name", "url"}
STAGING_ERRORS = {400: "invalid model url", 404: "model not found", 507: "insufficient storage"}
router = APIRouter()


def start_backend(settings: Settings) -> subprocess.Popen:
    """multi-model-server on 127.0.0.1:``settings.backend_port`` (not published), in its own session."""
    address = f"http://127.0.0.1:{settings.backend_port}"  # MMS reads MMS_* variables (enable_envvars_config=true)
    env = {
        **os.environ,
        "SAGEMAKER_BIND_TO_PORT": str(settings.backend_port),
        "SAGEMAKER_MULTI_MODEL": "true",
        "MMS_INFERENCE_ADDRESS": address,
        "MMS_MANAGEMENT_ADDRESS": address,
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(settings.workers),
    }  # MMS's own default is a worker per core: the memory check counts these
    log.info("starting multi-model-server on %s", address)
    process = subprocess.Popen(
        [sys.executable, "-m", "serve.mms_backend"],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    threading.Thread(target=relay_log, args=(process.stdout,), name="mms-log", daemon=True).start()
    return process


def relay_log(stream: IO[bytes]) -> None:
    """MMS's log lines to our stderr, without its access lines for /ping (as for the single-model server)."""
    for line in stream:
        if b'"GET /ping ' not in line:
            sys.stderr.buffer.write(line)
            sys.stderr.flush()


def backend_error(response: httpx.Response) -> RequestError | None:
    """MMS's own errors (``{"code", "type", "message"}``) and our handler service's, as a RequestError; None on
    success."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text.strip()}
    body = body if isinstance(body, dict) else {}
    if isinstance(body.get("error"), str):  # already ours (from the handler service)
        return RequestError(response.status_code, body["error"], str(body.get("detail", "")))
    kind = re.sub(r"(?<!^)(?=[A-Z])", " ", body.get("type", "error")).lower().removesuffix(" exception")
    return RequestError(response.status_code, kind, body.get("message", response.reason_phrase))


def check_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise RequestError(400, "invalid model name", f"{name!r}: use up to 128 letters, digits, '.', '_' or '-'.")
    return name


def load_request(body: bytes, settings: Settings) -> dict:
    """The JSON body of POST /models, ``{"model_name": ..., "url": ...}``, checked; the url resolved."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RequestError(
            400, "invalid JSON", f'{type(exc).__name__}. Send {{"model_name": ..., "url": ...}}.'
        ) from None
    if (
        not isinstance(request, dict)
        or not isinstance(request.get("model_name"), str)
        or not isinstance(request.get("url"), str)
    ):
        raise RequestError(
            400, "invalid load request", 'Send {"model_name": "<name>", "url": "/opt/ml/models/<name>/model"}.'
        )
    return {
        "model_name": check_name(request["model_name"]),
        "url": str(model_folder(request["url"], settings.models_root)),
    }


def model_folder(url: str, root: Path) -> Path:
    """``url`` resolved (links and '..' followed); it must lie under ``root``, where SageMaker puts the models."""
    try:
        folder = Path(url).resolve()
    except (OSError, RuntimeError, ValueError):
        folder = None
    if (
        folder is None
        or not Path(url).is_absolute()
        or not folder.is_relative_to(root.resolve())
        or folder == root.resolve()
    ):
        raise RequestError(
            400, "invalid model url", f"{url!r}: give the model's folder under {root}, e.g. {root}/<name>/model."
        )
    return folder


def check_artifact(folder: Path, runtime: str) -> Path | None:
    """The model file ``runtime`` loads from ``folder`` (None when the user's code/ decides); a folder it cannot load
    is refused (MMS would register it and fail on every request)."""
    if not folder.is_dir():
        raise RequestError(
            404,
            "model not found",
            f"{folder} does not exist: SageMaker extracts model.tar.gz to /opt/ml/models/<name>/model.",
        )
    if (folder / "code").is_dir():
        return None  # the user's model_fn decides what a model is
    try:
        return model_file(load_spec(folder), runtime)
    except ArtifactError as exc:
        raise RequestError(422, "invalid model", str(exc)) from None


def readable_copy(folder: Path) -> Path | None:
    """A copy of ``folder`` this unprivileged process can read, made by the root helper (``serve.privileges``), when
    it cannot read ``folder`` itself; None when it can, or when no helper runs (not started as root)."""
    helper = privileges.HELPER
    user = privileges.ServiceUser.find()
    if helper is None or user is None or privileges.readable_by(folder, user):
        return None
    try:
        return helper.stage(folder)
    except privileges.StagingError as exc:
        raise RequestError(exc.status, STAGING_ERRORS[exc.status], str(exc)) from None


def check_memory(name: str, file: Path | None, settings: Settings) -> None:
    """507 when loading ``file`` would not fit in the memory this container has left."""
    if file is None:
        return
    need, free = memory.load_need_bytes(file, settings.workers), memory.available_bytes()
    if need > free:
        raise RequestError(
            507,
            "insufficient memory",
            f"Loading {name!r} takes about {need >> 20} MB and {free >> 20} MB are free; unload a model (DELETE "
            "/models/<name>) or use an instance with more memory.",
        )


async def call_backend(state, method: str, path: str, timeout: float | None = None, **kwargs) -> httpx.Response:
    """The request to multi-model-server; its absence a 503, its slowness a 504, its errors as they are."""
    try:
        return await state.client.request(method, path, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs)
    except httpx.TimeoutException:
        raise RequestError(
            504, "timeout", f"The model server took longer than {timeout or state.settings.timeout_seconds} s."
        ) from None
    except httpx.TransportError as exc:
        exit_code = state.process.poll()
        reason = f"it exited with code {exit_code}" if exit_code is not None else f"{type(exc).__name__}: {exc}"
        raise RequestError(
            503, "model server unavailable", f"multi-model-server is not answering ({reason})."
        ) from None


async def forward(request: Request, method: str, path: str, timeout: float | None = None, **kwargs) -> Response:
    """The request to multi-model-server, its answer in our shape."""
    response = await call_backend(request.app.state, method, path, timeout, **kwargs)
    error = backend_error(response)
    if error is not None:
        return error_response(error)
    return Response(response.content, status_code=response.status_code, media_type=response.headers.get("content-type"))


def invoke_headers(ctx: RequestContext, top_k: str | None = None, explain: str | None = None) -> dict[str, str]:
    """What the handler service needs of a request: its type (MMS parses forms, so the body goes as opaque bytes),
    Accept, custom attributes (``top_k`` from the query last: it wins, as on /invocations) and its protocol."""
    headers = {k: ctx.headers[k] for k in FORWARDED_HEADERS if k in ctx.headers}
    headers.update(
        {
            ORIGINAL_CONTENT_TYPE: headers.pop("content-type", ""),
            "content-type": "application/octet-stream",
            PROTOCOL: ctx.protocol,
        }
    )
    queried = [f"{key}={value}" for key, value in (("top_k", top_k), ("explain", explain)) if value is not None]
    if queried:
        headers["x-amzn-sagemaker-custom-attributes"] = ", ".join(
            filter(None, [headers.get("x-amzn-sagemaker-custom-attributes"), *queried])
        )
    return headers


class MultiModel:
    """The Open Inference Protocol's view of a multi-model endpoint (``serve.oip_routes.Repository``): the models loaded
    in multi-model-server, each under its own name."""

    def __init__(self, state):
        self.state = state

    async def index(self) -> list[dict]:
        models, token = [], None
        while True:
            params = {"limit": 100, **({"next_page_token": token} if token else {})}
            page = self.checked(await call_backend(self.state, "GET", "/models", params=params)).json()
            models += [
                {"name": m["modelName"], "version": "1", "state": "READY", "reason": ""} for m in page.get("models", [])
            ]
            token = page.get("nextPageToken")
            if not token:
                return models

    async def ready(self) -> str | None:
        exit_code = self.state.process.poll()
        return None if exit_code is None else f"multi-model-server exited with code {exit_code}."

    async def spec(self, name: str) -> ModelSpec:
        response = await call_backend(self.state, "GET", f"/models/{check_name(name)}")
        if response.status_code == 404:
            raise RequestError(404, "model not found", f"No model {name!r} is loaded; load it with POST /models first.")
        described = self.checked(response).json()
        model = (
            (described[0] if described else {}) if isinstance(described, list) else described
        )  # MMS answers an object; TorchServe a list
        if not any(w.get("status") == "READY" for w in model.get("workers", [])):
            raise RequestError(503, "not ready", f"The model {name!r} has no worker ready yet.", {"Retry-After": "5"})
        try:
            return load_spec(Path(model["modelUrl"]))
        except (ArtifactError, KeyError) as exc:
            raise RequestError(
                400,
                "not served by the Open Inference Protocol",
                f"The model {name!r} has no byoc-vision model.json ({exc}).",
            ) from None

    async def infer(self, name: str, body: bytes, ctx: RequestContext) -> Response:
        headers = {
            **invoke_headers(ctx),
            **(
                {oip_bodies.HEADER_LENGTH: ctx.headers[oip_bodies.HEADER_LENGTH]}
                if oip_bodies.HEADER_LENGTH in ctx.headers
                else {}
            ),
        }
        path = f"/models/{check_name(name)}/invoke"
        response = self.checked(
            await call_backend(
                self.state, "POST", path, timeout=max(ctx.deadline.remaining(), 0.001), content=body, headers=headers
            )
        )
        return oip_routes.inference_response(response.content, response.headers.get("content-type", "application/json"))

    @staticmethod
    def checked(response: httpx.Response) -> httpx.Response:
        error = backend_error(response)
        if error is not None:
            raise error
        return response


@router.get("/ping")
async def ping(request: Request) -> Response:
    """200 once multi-model-server has answered once and while it runs (models are loaded later, on request)."""
    state = request.app.state
    if state.process.poll() is not None:
        return error_response(
            RequestError(
                503, "model server unavailable", f"multi-model-server exited with code {state.process.poll()}."
            )
        )
    if not state.backend_up:
        response = await forward(request, "GET", "/ping", timeout=1.5)
        state.backend_up = response.status_code == 200
        return response
    return JSONResponse({"status": "Healthy"})


@router.post("/models")
async def load(request: Request) -> Response:
    """Load a model: ``{"model_name": ..., "url": "/opt/ml/models/<name>/model"}``; 409 if already loaded, 404 for a
    missing folder, 507 when it would not fit in memory."""
    state, settings = request.app.state, request.app.state.settings
    with DRAIN.request():
        body = load_request(await read_body(request, LOAD_REQUEST_BYTES, settings.body_timeout_seconds), settings)
        name = body["model_name"]
        if (await call_backend(state, "GET", f"/models/{name}")).status_code == 200:  # before copying anything
            raise RequestError(
                409,
                "conflict status",
                f"A model named {name!r} is already loaded; unload it first (DELETE /models/{name}).",
            )
        staged = await asyncio.to_thread(readable_copy, Path(body["url"]))
        try:
            response = await load_readable(request, {**body, "url": str(staged or body["url"])})
        except BaseException:
            remove(staged)
            raise
        if response.status_code >= 300:
            remove(staged)
        elif staged is not None:
            state.staged[name] = staged
        return response


async def load_readable(request: Request, body: dict) -> Response:
    """The load, once the folder is readable: checks, requirements, the memory check, then multi-model-server."""
    settings, folder = request.app.state.settings, Path(body["url"])
    file = check_artifact(folder, settings.runtime)
    check_memory(body["model_name"], file, settings)
    try:
        await asyncio.to_thread(
            install_requirements, folder, settings.code_packages_dir, settings.requirements_timeout_seconds
        )
    except RequirementsError as exc:
        raise RequestError(422, "cannot install requirements", str(exc)) from None
    batching = {"batch_size": settings.max_batch_images, "max_batch_delay": settings.max_batch_delay_ms}
    kills = memory.oom_kills()
    response = await forward(request, "POST", "/models", timeout=LOAD_TIMEOUT_SECONDS, json={**body, **batching})
    if response.status_code >= 500 and memory.oom_kills() > kills:
        return error_response(
            RequestError(
                507,
                "insufficient memory",
                f"The kernel stopped a process loading {body['model_name']!r} for lack of memory; unload a model or "
                "use an instance with more memory.",
            )
        )
    return response


def remove(staged: Path | None) -> None:
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)


@router.get("/models")
async def list_models(request: Request, next_page_token: str | None = None, limit: int | None = None) -> Response:
    """The loaded models (paged with ``next_page_token``)."""
    params = {k: v for k, v in {"next_page_token": next_page_token, "limit": limit}.items() if v is not None}
    return await forward(request, "GET", "/models", params=params)


@router.get("/models/{name}")
async def describe(name: str, request: Request) -> Response:
    return await forward(request, "GET", f"/models/{check_name(name)}")


@router.delete("/models/{name}")
async def unload(name: str, request: Request) -> Response:
    """Unload a model: its worker processes end, so their memory goes back; 404 for a model not loaded."""
    response = await forward(request, "DELETE", f"/models/{check_name(name)}", timeout=LOAD_TIMEOUT_SECONDS)
    if response.status_code < 300:
        remove(request.app.state.staged.pop(name, None))
    return response


@router.post("/models/{name}/invoke")
async def invoke(name: str, request: Request, top_k: str | None = None, explain: str | None = None) -> Response:
    """Run model ``name`` on the body: the same bodies, Accept types, top_k and limits as /invocations."""
    path = f"/models/{check_name(name)}/invoke"

    async def answer(body: bytes, ctx: RequestContext) -> Response:
        return await forward(
            request,
            "POST",
            path,
            timeout=max(ctx.deadline.remaining(), 0.001),
            content=body,
            headers=invoke_headers(ctx, top_k, explain),
        )

    return await invocations.invocation(request, answer)


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    app.state.process = start_backend(settings)
    app.state.client = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{settings.backend_port}", timeout=httpx.Timeout(settings.timeout_seconds, connect=5)
    )
    yield
    await app.state.client.aclose()
    app.state.process.terminate()
    await asyncio.to_thread(app.state.process.wait, settings.timeout_seconds)


def create_mme_app(settings: Settings) -> FastAPI:
    """The multi-model front: /ping, POST/GET /models, GET/DELETE /models/{name}, POST /models/{name}/invoke, and
    the Open Inference Protocol's /v2 routes for every loaded model."""
    app = FastAPI(title="byoc-vision (multi-model)", summary="SageMaker multi-model endpoint API", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.admission = Admission(settings.max_concurrent_requests, settings.max_queued_images)
    app.state.uploads = Uploads(settings.max_concurrent_uploads, settings.max_upload_buffer_bytes)
    app.state.trimmer = memory.Trimmer(settings.malloc_trim)
    app.state.backend_up = False
    app.state.staged = {}  # model name -> the copy the root helper made of its folder (removed on unload)
    app.state.repository = MultiModel(app.state)
    add_error_handlers(app)
    app.include_router(router)
    app.include_router(invocations.router)
    app.include_router(oip_routes.router)
    return app
