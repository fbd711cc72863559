"""The one request pipeline every front uses (``/invocations``, multi-model ``/models/{name}/invoke`` through
MMS's handler service, batch transform): decode -> batched predict -> encode, with one request context.

As in sagemaker-inference-toolkit's ``Transformer``, a user's ``input_fn``, ``predict_fn``, ``output_fn`` or
``transform_fn`` (``serve.user_code``) replaces its step; ``model_fn`` replaces loading. The steps are plain
functions; ``Pipeline`` runs them for the asyncio front (worker threads, the dynamic batcher, the deadline) and
``Transformer.transform_batch`` for MMS, which hands over a batch of requests at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType

import numpy as np

from byoc_contract.messages import one_line
from serve import explain, oip_bodies
from serve.artifact import ArtifactError, ModelSpec, load_spec
from serve.batching import Batcher, run_together
from serve.decode import JSONLINES_TYPES, Decoder, Source, media_type, open_picture
from serve.encode import choose_accept, encode, parse_top_k
from serve.explain import CamHead
from serve.fetch import Fetcher
from serve.http_common import RequestError, internal_error
from serve.limits import Deadline, worker_pool
from serve.metrics import Metrics
from serve.runtime import Runtime, load_runtime
from serve.settings import Settings
from serve.user_code import HANDLER_FUNCTIONS, Context, call

log = logging.getLogger("serve")
UTF8_TYPES = ("application/json", "text/csv")  # bodies the toolkit hands to a user's input_fn as str
SAGEMAKER, OPEN_INFERENCE = "sagemaker", "v2"
OWN_STEPS = ("input_fn", "output_fn", "transform_fn")  # the Open Inference Protocol needs our decoding and encoding


@dataclass
class RequestContext:
    """Everything about one request the steps need: its types, headers, top_k, deadline and image budget."""

    content_type: str | None
    accept: str | None
    headers: dict[str, str]
    deadline: Deadline
    top_k: str | None = None  # the ?top_k= query value; the custom attributes header is read from ``headers``
    explain_query: str | None = None  # the ?explain= query value
    reserve: Callable[[int], None] = lambda count: None
    protocol: str = SAGEMAKER  # or OPEN_INFERENCE: the body and response are the Open Inference Protocol's
    model_name: str = "model"
    jsonlines: bool = field(init=False, default=False)
    k: int = field(init=False, default=0)
    inference: oip_bodies.InferRequest | None = field(init=False, default=None)
    explain: str | None = field(init=False, default=None)  # the explanation asked for ("cam"), once checked
    sources: list[Source] = field(init=False, default_factory=list)  # the images' bytes, kept for explanations
    features: np.ndarray | None = field(init=False, default=None)  # their feature maps, from the model run
    network_input: np.ndarray | None = field(init=False, default=None)  # the batch the explained model run saw

    @classmethod
    def from_headers(
        cls, headers: dict[str, str], timeout: float, started: float | None = None, **kwargs
    ) -> RequestContext:
        """The context of a request that arrived at ``started`` (time.monotonic(); default now) with ``timeout`` s."""
        headers = {k.lower(): v for k, v in headers.items()}
        return cls(headers.get("content-type"), headers.get("accept"), headers, Deadline(timeout, started), **kwargs)


def load_model(settings: Settings, spec: ModelSpec) -> Runtime:
    """Our model_fn: the artifact in the runtime and precision the settings choose, warmed up by one inference."""
    try:
        model = load_runtime(
            spec, settings.runtime, settings.threads, settings.precision, settings.recheck_margin, settings.calibrated
        )
        model.warm_up()
    except ArtifactError:
        raise
    except Exception as exc:  # the runtimes raise their own types for a corrupt, truncated or foreign model file
        raise ArtifactError(unloadable(spec, settings.runtime, exc)) from exc
    return model


def unloadable(spec: ModelSpec, runtime: str, exc: Exception) -> str:
    """What to tell the user when ``runtime`` cannot load or run the artifact in ``spec.directory``."""
    return (
        f"the {runtime} runtime cannot load or run the model in {spec.directory} ({one_line(exc, 400)}): a model file "
        "is corrupt, truncated or not"
        " written by byoc-vision's trainer. Export the artifact again (python -m train.quantize MODEL_DIR --data DIR "
        "rewrites model_int8.xml),"
        " or serve another of its models (SERVE_PRECISION=bf16, SERVE_RUNTIME=onnxruntime)."
    )


def chosen_decode(setting: str, spec: ModelSpec) -> str:
    """SERVE_DECODE's choice, or with ``auto`` the decode training evaluated the model with (model.json); logged
    once."""
    decode = spec.decode if setting == "auto" else setting
    why = "as model.json says training evaluated the model" if setting == "auto" else f"SERVE_DECODE={setting}"
    if decode != spec.decode:
        why += f", though training evaluated the model with {spec.decode} decoding"
    log.info("decoding images %s (%s)", "at the scale the model needs" if decode == "scaled" else "in full", why)
    return decode


class Transformer:
    """The steps for one model: ours, or the user's handler functions in their place."""

    def __init__(self, settings: Settings, module: ModuleType | None = None):
        self.settings = settings
        self.model_dir = str(settings.model_dir)
        self.user = {name: getattr(module, name) for name in HANDLER_FUNCTIONS if hasattr(module, name)}
        has_spec = "model_fn" not in self.user or (settings.model_dir / "model.json").is_file()  # ours needs model.json
        self.spec = (
            load_spec(settings.model_dir) if has_spec else None
        )  # read once: loading, decoding and encoding share it
        if "model_fn" in self.user:
            self.model = call(self.user["model_fn"], self.model_dir, context=Context(self.model_dir))
        else:
            self.model = load_model(settings, self.spec)
        self.cam = (
            CamHead.load(self.spec.cam_file, len(self.spec.classes))
            if self.spec is not None and self.spec.cam_file
            else None
        )
        fetch = (
            Fetcher(settings.max_payload_bytes, settings.image_url_timeout_seconds, settings.allow_private_image_urls)
            if settings.allow_image_urls
            else None
        )
        self.decoder = None
        if has_spec:
            limits = (
                settings.max_pixels,
                settings.max_images_per_request,
                fetch,
                settings.max_image_urls,
                settings.max_explain_pixels,
            )
            self.decoder = Decoder(self.spec, *limits, decoding=chosen_decode(settings.decode, self.spec))

    def run_user(self, name: str, *args, ctx: RequestContext):
        """A user's handler function; its own failures are generic 500s (the reason is logged under the request id),
        our RequestErrors stay as they are."""
        try:
            return call(self.user[name], *args, context=Context(self.model_dir, ctx.headers))
        except RequestError:
            raise
        except Exception:
            raise internal_error(f"{name} in code/{self.settings.program}") from None

    def spec_for_protocol(self) -> ModelSpec:
        """The spec, for a model the Open Inference Protocol can serve: with model.json, our decoding and encoding."""
        replaced = [name for name in OWN_STEPS if name in self.user]
        if replaced or self.spec is None:
            detail = (
                f"code/{self.settings.program} replaces {', '.join(replaced)}"
                if replaced
                else "folder has no model.json"
            )
            raise RequestError(
                400,
                "not served by the Open Inference Protocol",
                f"This model's {detail}; send its requests to /invocations.",
            )
        return self.spec

    def check(self, ctx: RequestContext) -> None:
        """What can be refused before any work: the Accept type and top_k, when encoding is ours."""
        if ctx.protocol == OPEN_INFERENCE:
            self.spec_for_protocol()
            return
        if "output_fn" in self.user or "transform_fn" in self.user or self.spec is None:
            return
        ctx.jsonlines = media_type(ctx.content_type) in JSONLINES_TYPES
        ctx.accept = choose_accept(ctx.accept, ctx.jsonlines)
        attributes = ctx.headers.get("x-amzn-sagemaker-custom-attributes")
        ctx.k = parse_top_k(ctx.top_k, attributes, self.settings.default_top_k, len(self.spec.classes))
        ctx.explain = explain.requested(ctx.explain_query, attributes)
        if ctx.explain:
            self.check_explainable(ctx)

    def check_explainable(self, ctx: RequestContext) -> None:
        """An explanation is refused (4xx, before any work) for a model, runtime or answer type that cannot carry it."""
        if self.cam is None:
            raise RequestError(422, "explanations not available", f"{self.spec.explain_reason}.")
        if not getattr(self.model, "explains", False) or "predict_fn" in self.user:
            raise RequestError(
                400,
                "explanations not available",
                "This server's runtime or code/inference.py predict_fn does not compute them; use "
                "SERVE_RUNTIME=openvino or onnxruntime.",
            )
        if ctx.accept != "application/json" and ctx.accept != "application/jsonlines":
            raise RequestError(
                406,
                "explanations are JSON",
                f"Accept {ctx.accept!r} cannot carry an explanation; ask for application/json.",
            )

    def payload(self, body: bytes, ctx: RequestContext) -> bytes | str:
        """The body as a user's function receives it: text for JSON and CSV (as the toolkit does), else bytes."""
        if media_type(ctx.content_type) not in UTF8_TYPES:
            return body
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(
                400, "bad text body", f"The {media_type(ctx.content_type)} body is not UTF-8 ({exc})."
            ) from None

    def decode(self, body: bytes, ctx: RequestContext):
        if "input_fn" in self.user:
            return self.run_user("input_fn", self.payload(body, ctx), ctx.content_type or "", ctx=ctx)
        if self.decoder is None:
            raise RequestError(
                500, "handler error", "The model folder has no model.json, so code/inference.py must define input_fn."
            )
        if ctx.protocol == OPEN_INFERENCE:
            ctx.inference = oip_bodies.parse_request(
                body, ctx.headers.get(oip_bodies.HEADER_LENGTH), self.spec, self.decoder.check_count
            )
            ctx.k = parse_top_k(
                ctx.inference.top_k,
                ctx.headers.get("x-amzn-sagemaker-custom-attributes"),
                self.settings.default_top_k,
                len(self.spec.classes),
            )
            return self.decoder.inference_batch(ctx.inference, ctx.deadline, ctx.reserve)
        batch, _ = self.decoder.decode(
            body, ctx.content_type, ctx.deadline, ctx.reserve, ctx.sources if ctx.explain else None
        )
        return batch

    def batchable(self, data, ctx: RequestContext) -> bool:
        """Whether ``data`` can share a model run with other requests' (our predict on an NCHW float batch; an
        explanation runs on its own, so requests without one never wait for it)."""
        return (
            not ctx.explain
            and "predict_fn" not in self.user
            and isinstance(data, np.ndarray)
            and data.ndim == 4
            and hasattr(self.model, "predict")
        )

    def predict_rows(self, batch: np.ndarray) -> np.ndarray:
        return self.model.predict(batch)

    def predict(self, data, ctx: RequestContext):
        if "predict_fn" in self.user:
            return self.run_user("predict_fn", data, self.model, ctx=ctx)
        if ctx.explain:
            probabilities, ctx.features = self.model.explain_batch(data)
            ctx.network_input = data
            return probabilities
        return self.model.predict(data)

    def encode(self, prediction, ctx: RequestContext) -> tuple[bytes, str]:
        if "output_fn" in self.user:
            return self.response(self.run_user("output_fn", prediction, self.user_accept(ctx), ctx=ctx), ctx)
        if self.spec is None:
            raise RequestError(
                500, "handler error", "The model folder has no model.json, so code/inference.py must define output_fn."
            )
        if ctx.inference is not None:
            return oip_bodies.encode_response(
                np.asarray(prediction), self.spec.classes, ctx.inference, ctx.model_name, ctx.k
            )
        return encode(
            prediction, self.spec.classes, ctx.k, ctx.accept, self.spec.threshold, self.explanations(prediction, ctx)
        ), ctx.accept

    def explanations(self, prediction: np.ndarray, ctx: RequestContext) -> list[dict] | None:
        """Each image's class activation map for its top class, over its picture (or, for a preprocessed array,
        over the picture the network saw)."""
        if not ctx.explain:
            return None
        results = []
        for i, (features, row) in enumerate(zip(ctx.features, prediction, strict=False)):
            picture, box = self.explained_picture(ctx, i)
            top = int(row.argmax())
            results.append(explain.explanation(picture, features, self.cam, top, self.spec.classes[top], box))
            del picture  # one full-size picture at a time
        return results

    def explained_picture(self, ctx: RequestContext, i: int) -> tuple:
        """The picture image ``i``'s map is drawn on and where the network's crop lies in it: the request's image,
        decoded again (so one full-size picture is held at a time), or the picture a preprocessed array shows."""
        if ctx.sources:
            picture = open_picture(ctx.sources[i].data, self.settings.max_pixels)
            return explain.bounded(picture, explain.crop_box(picture.size, self.spec), self.settings.explain_max_side)
        view = explain.network_view(ctx.network_input[i], self.spec)
        return explain.bounded(view, (0, 0, *view.size), self.settings.explain_max_side)

    def transform_whole(self, body: bytes, ctx: RequestContext) -> tuple[bytes, str]:
        """The user's transform_fn in place of all three steps."""
        result = self.run_user(
            "transform_fn", self.model, self.payload(body, ctx), ctx.content_type or "", self.user_accept(ctx), ctx=ctx
        )
        return self.response(result, ctx)

    def user_accept(self, ctx: RequestContext) -> str:
        return ctx.accept if ctx.accept and ctx.accept != "*/*" else "application/json"

    def response(self, result, ctx: RequestContext) -> tuple[bytes, str]:
        """A user function's result (bytes, str, or a (body, content type) pair) as response bytes and type."""
        body, response_type = result if isinstance(result, tuple) else (result, self.user_accept(ctx))
        return (body.encode() if isinstance(body, str) else bytes(body)), response_type

    def first_step(self, body: bytes, ctx: RequestContext):
        """The checks, then the user's transform_fn's whole answer, or the decoded input."""
        self.check(ctx)
        return self.transform_whole(body, ctx) if "transform_fn" in self.user else self.decode(body, ctx)

    def transform_batch(self, requests: list[tuple[bytes, RequestContext]]) -> list[tuple[bytes, str] | RequestError]:
        """Several requests at once (MMS's batch): each decoded, the batchable ones predicted in one run, each encoded.
        Each request's outcome is its own: one that fails in any way never fails its neighbours."""
        results: list = [None] * len(requests)
        decoded: dict[int, object] = {}
        for i, (body, ctx) in enumerate(requests):
            outcome = own_outcome(partial(self.first_step, body, ctx))
            if "transform_fn" in self.user or isinstance(outcome, RequestError):
                results[i] = outcome
            else:
                decoded[i] = outcome
        together = [i for i, data in decoded.items() if self.batchable(data, requests[i][1])]
        predictions = (
            dict(zip(together, run_together(self.predict_rows, [decoded[i] for i in together]), strict=False))
            if together
            else {}
        )
        for i, data in decoded.items():
            ctx = requests[i][1]
            results[i] = own_outcome(
                lambda i=i, data=data, ctx=ctx: self.encode(
                    predictions[i] if i in predictions else self.predict(data, ctx), ctx
                )
            )
        return results


def own_outcome(step: Callable[[], object]) -> object:
    """``step()``'s result, or the RequestError it raised; any other exception a generic 500 logged with its id."""
    try:
        return step()
    except RequestError as exc:
        return exc
    except Exception:
        return internal_error("a request of a multi-model batch")


class Pipeline:
    """Runs a Transformer's steps for the asyncio front: decoding, encoding and user code in ``worker_threads``
    threads, our predictions through the dynamic batcher, all within the request's deadline."""

    def __init__(self, transformer: Transformer, settings: Settings, metrics: Metrics):
        self.transformer, self.metrics = transformer, metrics
        self.workers = worker_pool(settings.worker_threads, "decode")
        self.decoding = 0  # requests between arrival and the batcher: the only ones a batch can still wait for
        self.batcher = Batcher(
            self.timed_predict,
            settings.max_batch_images,
            settings.max_batch_delay_ms / 1000,
            metrics.batch.observe,
            lambda: self.decoding > 0,
        )

    def timed_predict(self, batch: np.ndarray) -> np.ndarray:
        """One model run of the batcher, timed per image (the ``model`` stage)."""
        started = time.perf_counter()
        result = self.transformer.predict_rows(batch)
        self.metrics.observe_stage("model", time.perf_counter() - started, len(batch))
        return result

    def timed_decode(self, body: bytes, ctx: RequestContext):
        """Our decoding of one request, timed per image when it gives a batch (the ``decode`` stage)."""
        started = time.perf_counter()
        data = self.transformer.decode(body, ctx)
        if isinstance(data, np.ndarray) and data.ndim == 4:
            self.metrics.observe_stage("decode", time.perf_counter() - started, len(data))
        return data

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self.workers.shutdown(wait=False, cancel_futures=True)

    async def transform(self, body: bytes, ctx: RequestContext) -> tuple[bytes, str]:
        """decode -> batched predict -> encode; 504 once the deadline passes, wherever the request is."""
        try:
            return await asyncio.wait_for(self._transform(body, ctx), ctx.deadline.remaining())
        except TimeoutError:
            raise ctx.deadline.expired() from None

    async def _transform(self, body: bytes, ctx: RequestContext) -> tuple[bytes, str]:
        t = self.transformer
        t.check(ctx)
        if "transform_fn" in t.user:
            return await self.in_worker(t.transform_whole, body, ctx)
        self.decoding += 1
        try:
            data = await self.in_worker(self.timed_decode, body, ctx)
        finally:
            self.decoding -= 1
        prediction = (
            await self.batcher.submit(data) if t.batchable(data, ctx) else await self.in_worker(t.predict, data, ctx)
        )
        return await self.in_worker(t.encode, prediction, ctx)

    async def in_worker(self, step, *args):
        return await asyncio.wrap_future(self.workers.submit(step, *args))
