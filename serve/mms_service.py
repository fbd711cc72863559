"""The handler service multi-model-server runs for each model of a multi-model endpoint.

MMS loads this module once per model (``initialize`` with the model's folder) and calls ``handle`` with the
requests of that model; decoding, prediction and encoding are the FastAPI front's (``serve.handler``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from serve.decode import RequestError
from serve.handler import Handler, user_module
from serve.settings import Settings

log = logging.getLogger(__name__)


class HandlerService:
    """MMS's custom-service contract: ``initialize(context)`` once, then ``handle(data, context)`` per batch."""

    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.error = "The model is not initialized."

    def initialize(self, context) -> None:
        """Load the model; MMS keeps a worker whose initialize failed, so the reason is kept for its requests."""
        settings = dataclasses.replace(Settings.from_env(), model_dir=Path(context.system_properties["model_dir"]))
        try:
            self.handler = Handler(settings, user_module(settings))
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("model %s failed to load from %s", context.model_name, settings.model_dir)
            return
        log.info("model %s ready from %s", context.model_name, settings.model_dir)

    def handle(self, data: list[dict], context) -> list[bytes]:
        """One response per request; bad input gets its 4xx and a JSON ``{"error", "detail"}`` body."""
        responses = []
        for index, request in enumerate(data):
            headers = {k.lower(): v for k, v in context.get_all_request_header(index).items() if isinstance(v, str)}
            body = request.get("body") or request.get("data") or b""
            try:
                if self.handler is None:
                    raise RequestError(500, "model failed to load", self.error)
                result, response_type = self.handler.transform(bytes(body), headers.get("content-type"), headers.get("accept"), headers)
            except RequestError as exc:
                result, response_type = _error(context, index, exc.status, exc.error, exc.detail)
            except Exception as exc:  # the user's handler functions: reported, and the worker keeps serving
                log.exception("inference failed")
                result, response_type = _error(context, index, 500, "handler error", f"{type(exc).__name__}: {exc}")
            context.set_response_content_type(index, response_type)
            responses.append(result)
        return responses


def _error(context, index: int, status: int, error: str, detail: str) -> tuple[bytes, str]:
    context.set_response_status(status, error, index)
    return json.dumps({"error": error, "detail": detail}).encode(), "application/json"
