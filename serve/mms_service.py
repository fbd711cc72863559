"""The handler service multi-model-server runs for each model of a multi-model endpoint.

MMS is told its entry point by name, ``serve.mms_service:handle`` (``ENTRY_POINT``, passed by ``serve.mms_backend``),
not left to find the one class in this module. Each MMS worker process serves one model: the first call
(``data`` None) initializes ``HandlerService`` with the model's folder, and every later call hands it a batch
of that model's requests (up to SERVE_MAX_BATCH_SIZE, gathered for SERVE_MAX_BATCH_DELAY_MS); they run through
the same pipeline as /invocations (``serve.pipeline.Transformer``), predicted together in one model run.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from serve.artifact import load_failure
from serve.http_common import RequestError, internal_error
from serve.pipeline import OPEN_INFERENCE, SAGEMAKER, RequestContext, Transformer
from serve.settings import Settings
from serve.user_code import user_module

log = logging.getLogger(__name__)
ORIGINAL_CONTENT_TYPE = (
    "x-byoc-content-type"  # the front sends bodies as opaque bytes (MMS parses forms), their type here
)
PROTOCOL = "x-byoc-protocol"  # the front's route: SageMaker's invoke or the Open Inference Protocol's infer


class HandlerService:
    """MMS's custom-service contract: ``initialize(context)`` once, then ``handle(data, context)`` per batch."""

    def __init__(self) -> None:
        self.transformer: Transformer | None = None
        self.settings: Settings | None = None
        self.error = "The model is not initialized."

    def initialize(self, context) -> None:
        """Load the model; MMS keeps a worker whose initialize failed, so the reason is kept for its requests."""
        settings = dataclasses.replace(Settings.from_env(), model_dir=Path(context.system_properties["model_dir"]))
        self.settings = settings
        try:
            module = user_module(
                settings.model_dir, settings.program, settings.code_packages_dir, settings.requirements_timeout_seconds
            )
            self.transformer = Transformer(settings, module)
        except Exception as exc:
            self.error = load_failure(exc)
            log.exception("model %s failed to load from %s", context.model_name, settings.model_dir)
            return
        log.info("model %s ready from %s", context.model_name, settings.model_dir)

    def handle(self, data: list[dict], context) -> list[bytes]:
        """One response per request; bad input gets its 4xx and a JSON ``{"error", "detail"}`` body."""
        requests = []
        for index, request in enumerate(data):
            headers = {k.lower(): v for k, v in context.get_all_request_header(index).items() if isinstance(v, str)}
            headers["content-type"] = headers.pop(ORIGINAL_CONTENT_TYPE, headers.get("content-type", ""))
            body = request.get("body") or request.get("data") or b""
            protocol = OPEN_INFERENCE if headers.get(PROTOCOL) == OPEN_INFERENCE else SAGEMAKER
            ctx = RequestContext.from_headers(
                headers, self.settings.timeout_seconds, protocol=protocol, model_name=context.model_name
            )
            requests.append((bytes(body), ctx))
        try:
            if self.transformer is None:
                raise RequestError(500, "model failed to load", self.error)
            outcomes = self.transformer.transform_batch(requests)
        except RequestError as exc:
            outcomes = [exc] * len(requests)
        except Exception:  # the batched model run itself failed: every request of that run gets a 500
            outcomes = [internal_error(f"model {context.model_name}'s batched inference")] * len(requests)
        responses = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, RequestError):
                context.set_response_status(outcome.status, outcome.error, index)
                outcome = (outcome.body(), "application/json")
            context.set_response_content_type(index, outcome[1])
            responses.append(outcome[0])
        return responses


ENTRY_POINT = f"{__name__}:handle"  # what serve.mms_backend gives MMS as the handler
SERVICE = HandlerService()  # one per MMS worker process, which serves a single model


def handle(data: list[dict] | None, context) -> list[bytes] | None:
    """MMS's function entry point: called once with ``data`` None when the worker loads its model, then per batch."""
    if data is None:
        SERVICE.initialize(context)
        return None
    return SERVICE.handle(data, context)
