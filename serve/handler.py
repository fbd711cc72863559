"""A user's ``code/inference.py`` in the artifact, with the SageMaker inference toolkit's semantics:
its ``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn`` or ``transform_fn`` replace ours, each may take an
extra ``context`` argument, and ``code/requirements.txt`` is installed first."""
from __future__ import annotations

import importlib.util
import inspect
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from types import ModuleType

from serve.artifact import ModelSpec, load_spec
from serve.decode import decode, media_type
from serve.encode import choose_accept, encode
from serve.runtime import Runtime, load_runtime
from serve.settings import Settings

log = logging.getLogger(__name__)
TEXT_TYPES = ("application/json", "application/jsonlines", "application/x-jsonlines", "text/csv", "text/plain")


@dataclass
class Context:
    """What the toolkit's context offers a handler: the model folder and the request's headers."""

    model_dir: str
    request_headers: dict = field(default_factory=dict)

    @property
    def system_properties(self) -> dict:
        return {"model_dir": self.model_dir, "gpu_id": None}


def call(function, *args, context: Context):
    """Call with or without the trailing context argument, by the function's parameter count (as the toolkit does)."""
    count = len(inspect.signature(function).parameters)
    if count == len(args):
        return function(*args)
    if count == len(args) + 1:
        return function(*args, context)
    raise TypeError(f"{function.__name__} takes {count} arguments but {len(args)} (or {len(args) + 1} with context) are given")


def user_module(settings: Settings) -> ModuleType | None:
    """Import ``code/<SAGEMAKER_PROGRAM>`` from the model folder, after installing its requirements."""
    code = settings.model_dir / "code"
    script = code / settings.program
    if not script.is_file():
        return None
    requirements = code / "requirements.txt"
    if requirements.is_file():
        target = settings.code_packages_dir
        log.info("installing %s into %s", requirements, target)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "-r", str(requirements)], check=True)
        sys.path.insert(0, str(target))
    sys.path.insert(0, str(code))
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    overridden = [name for name in ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn") if hasattr(module, name)]
    log.info("using %s from %s", ", ".join(overridden) or "no handler functions", script)
    return module


def load_model(settings: Settings, spec: ModelSpec) -> Runtime:
    """Our model_fn: the artifact in the runtime and precision the settings choose, warmed up by one inference."""
    model = load_runtime(spec, settings.runtime, settings.threads, settings.precision, settings.recheck_margin)
    model.warm_up()
    return model


class Handler:
    """model_fn at load; per request transform_fn, by default output_fn(predict_fn(input_fn(body))).

    Without a user module every function is ours (decode -> runtime -> encode).
    """

    def __init__(self, settings: Settings, module: ModuleType | None = None):
        self.settings = settings
        self.model_dir = str(settings.model_dir)
        self.spec = load_spec(settings.model_dir) if (settings.model_dir / "model.json").is_file() else None
        self.model_fn = getattr(module, "model_fn", self.default_model_fn)
        self.input_fn = getattr(module, "input_fn", self.default_input_fn)
        self.predict_fn = getattr(module, "predict_fn", self.default_predict_fn)
        self.output_fn = getattr(module, "output_fn", self.default_output_fn)
        self.transform_fn = getattr(module, "transform_fn", self.default_transform_fn)
        self.model = call(self.model_fn, self.model_dir, context=Context(self.model_dir))

    def default_model_fn(self, model_dir: str):
        return load_model(self.settings, self.spec)

    def default_input_fn(self, body: bytes | str, content_type: str):
        data = body.encode() if isinstance(body, str) else body
        return decode(data, content_type, self.spec, self.settings.max_pixels)[0]

    def default_predict_fn(self, data, model):
        return model.predict(data)

    def default_output_fn(self, prediction, accept: str):
        return encode(prediction, self.spec.classes, min(self.settings.default_top_k, len(self.spec.classes)), choose_accept(accept, False))

    def default_transform_fn(self, model, body, content_type: str, accept: str, context: Context):
        data = call(self.input_fn, body, content_type, context=context)
        prediction = call(self.predict_fn, data, model, context=context)
        return call(self.output_fn, prediction, accept, context=context)

    def transform(self, body: bytes, content_type: str | None, accept: str | None, headers: dict) -> tuple[bytes, str]:
        """One request through the handler functions; returns (body, content type)."""
        context = Context(self.model_dir, headers)
        accept = accept if accept and accept != "*/*" else "application/json"
        payload: bytes | str = body.decode() if media_type(content_type) in TEXT_TYPES else body
        result = call(self.transform_fn, self.model, payload, content_type or "", accept, context=context)
        result, response_type = result if isinstance(result, tuple) else (result, accept)
        return (result.encode() if isinstance(result, str) else bytes(result)), response_type
