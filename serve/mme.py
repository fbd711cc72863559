"""Multi-model endpoints (``SAGEMAKER_MULTI_MODEL=true``): SageMaker's MME API in front of multi-model-server.

multi-model-server (started through sagemaker-inference, ``serve.mms_backend``) loads, unloads and runs the models
with our handler service on a private port; this front validates requests, forwards them, and gives every error
the same JSON ``{"error", "detail"}`` body as the single-model server.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from serve.app import add_error_handlers, read_body
from serve.artifact import ArtifactError, load_spec
from serve.runtime import model_file
from serve.decode import RequestError
from serve.metrics import Metrics
from serve.settings import Settings

log = logging.getLogger("serve")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
FORWARDED_HEADERS = ("content-type", "accept", "x-amzn-sagemaker-custom-attributes")
LOAD_TIMEOUT_SECONDS = 600.0


def start_backend(settings: Settings) -> subprocess.Popen:
    """multi-model-server on the private port ``settings.backend_port`` (not published), in its own session."""
    env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(settings.backend_port), "SAGEMAKER_MULTI_MODEL": "true"}
    log.info("starting multi-model-server on port %d", settings.backend_port)
    process = subprocess.Popen(
        [sys.executable, "-m", "serve.mms_backend"], env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )  # fmt: skip
    threading.Thread(target=relay_log, args=(process.stdout,), name="mms-log", daemon=True).start()
    return process


def relay_log(stream: IO[bytes]) -> None:
    """MMS's log lines to our stderr, without its access lines for /ping (as for the single-model server)."""
    for line in stream:
        if b'"GET /ping ' not in line:
            sys.stderr.buffer.write(line)
            sys.stderr.flush()


def backend_error(response: httpx.Response) -> JSONResponse | None:
    """MMS's own errors (``{"code", "type", "message"}``) in our shape; None when the response is a success."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text.strip()}
    if "error" in body:  # already ours (from the handler service)
        return JSONResponse(body, status_code=response.status_code)
    kind = re.sub(r"(?<!^)(?=[A-Z])", " ", body.get("type", "error")).lower().removesuffix(" exception")
    return JSONResponse({"error": kind, "detail": body.get("message", response.reason_phrase)}, status_code=response.status_code)


def check_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise RequestError(400, "invalid model name", f"{name!r}: use up to 128 letters, digits, '.', '_' or '-'.")
    return name


def load_request(body: bytes, runtime: str) -> dict:
    """The JSON body of POST /models: ``{"model_name": ..., "url": ...}``, with both fields checked."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(400, "invalid JSON", f"{exc}. Send {{\"model_name\": ..., \"url\": ...}}.") from None
    if not isinstance(request, dict) or not isinstance(request.get("model_name"), str) or not isinstance(request.get("url"), str):
        raise RequestError(400, "invalid load request", 'Send {"model_name": "<name>", "url": "/opt/ml/models/<name>/model"}.')
    check_name(request["model_name"])
    check_artifact(Path(request["url"]), runtime)
    return {"model_name": request["model_name"], "url": request["url"]}


def check_artifact(folder: Path, runtime: str) -> None:
    """Refuse a folder ``runtime`` cannot load (MMS would register it and fail on every request)."""
    if not folder.is_dir():
        raise RequestError(404, "model not found", f"{folder} does not exist: SageMaker extracts model.tar.gz to /opt/ml/models/<name>/model.")
    if (folder / "code").is_dir():
        return  # the user's model_fn decides what a model is
    try:
        model_file(load_spec(folder), runtime)
    except ArtifactError as exc:
        raise RequestError(422, "invalid model", str(exc)) from None


def create_mme_app(settings: Settings) -> FastAPI:
    """The multi-model front: /ping, POST/GET /models, GET/DELETE /models/{name}, POST /models/{name}/invoke."""
    metrics = Metrics()
    backend_url = f"http://127.0.0.1:{settings.backend_port}"
    state: dict = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        state["process"] = start_backend(settings)
        state["client"] = httpx.AsyncClient(base_url=backend_url, timeout=httpx.Timeout(settings.timeout_seconds, connect=5))
        yield
        await state["client"].aclose()
        process: subprocess.Popen = state["process"]
        process.terminate()
        await asyncio.to_thread(process.wait, settings.timeout_seconds)

    app = FastAPI(title="byoc-vision (multi-model)", summary="SageMaker multi-model endpoint API", lifespan=lifespan)
    add_error_handlers(app)

    async def forward(method: str, path: str, timeout: float | None = None, **kwargs) -> Response:
        try:
            response = await state["client"].request(method, path, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs)
        except httpx.TimeoutException:
            raise RequestError(504, "timeout", f"The model server took longer than {timeout or settings.timeout_seconds} s.") from None
        except httpx.TransportError as exc:
            exit_code = state["process"].poll()
            reason = f"it exited with code {exit_code}" if exit_code is not None else f"{type(exc).__name__}: {exc}"
            raise RequestError(503, "model server unavailable", f"multi-model-server is not answering ({reason}).") from None
        error = backend_error(response)
        if error is not None:
            return error
        return Response(response.content, status_code=response.status_code, media_type=response.headers.get("content-type"))

    @app.get("/ping")
    async def ping() -> Response:
        """200 once multi-model-server is up (models are loaded later, on request)."""
        return await forward("GET", "/ping")

    @app.post("/models")
    async def load(request: Request) -> Response:
        """Load a model: ``{"model_name": ..., "url": "/opt/ml/models/<name>/model"}``; 409 if already loaded."""
        body = load_request(await read_body(request, settings.max_payload_bytes), settings.runtime)
        return await forward("POST", "/models", timeout=LOAD_TIMEOUT_SECONDS, json=body)

    @app.get("/models")
    async def list_models(next_page_token: str | None = None, limit: int | None = None) -> Response:
        """The loaded models (paged with ``next_page_token``)."""
        params = {k: v for k, v in {"next_page_token": next_page_token, "limit": limit}.items() if v is not None}
        return await forward("GET", "/models", params=params)

    @app.get("/models/{name}")
    async def describe(name: str) -> Response:
        return await forward("GET", f"/models/{check_name(name)}")

    @app.delete("/models/{name}")
    async def unload(name: str) -> Response:
        return await forward("DELETE", f"/models/{check_name(name)}", timeout=LOAD_TIMEOUT_SECONDS)

    @app.post("/models/{name}/invoke")
    async def invoke(name: str, request: Request) -> Response:
        """Run model ``name`` on the body: the same content and Accept types as /invocations."""
        started = time.perf_counter()
        body = await read_body(request, settings.max_payload_bytes)
        headers = {k: request.headers[k] for k in FORWARDED_HEADERS if k in request.headers}
        response = await forward("POST", f"/models/{check_name(name)}/invoke", content=body, headers=headers)
        metrics.observe_request(response.status_code, request.headers.get("content-type"), time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus text for the invocations of every model."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
