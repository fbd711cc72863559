"""The AWS default serving stack, for comparison: sagemaker-inference + multi-model-server, torch eager fp32.

What the SageMaker PyTorch serving containers do for a torchvision classifier: one MMS worker, PIL decoding and
torchvision transforms per request, the model in eager fp32, JSON top-5 out. Runs in the torch flavour image:
``model_server.start_model_server(handler_service="bench.baseline_service:handle")``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from PIL import Image
from sagemaker_inference.default_handler_service import DefaultHandlerService
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler
from sagemaker_inference.transformer import Transformer

from bench.peers.torch_model import eval_transform, load


class TorchEagerHandler(DefaultInferenceHandler):
    """model_fn / input_fn / predict_fn / output_fn as the toolkit's default PyTorch handler would run them."""

    def default_model_fn(self, model_dir, context=None):
        model, info = load(Path(model_dir))
        self.classes = info["classes"]
        self.transform = eval_transform(info)
        return model

    def default_input_fn(self, input_data, content_type, context=None):
        return self.transform(Image.open(io.BytesIO(input_data)).convert("RGB"))[None]

    def default_predict_fn(self, data, model, context=None):
        with torch.no_grad():
            return torch.softmax(model(data), dim=1)

    def default_output_fn(self, prediction, accept, context=None):
        top = torch.topk(prediction[0], 5)
        return json.dumps(
            [{"label": self.classes[i], "probability": float(p)} for p, i in zip(top.values, top.indices, strict=False)]
        )


_service = DefaultHandlerService(transformer=Transformer(default_inference_handler=TorchEagerHandler()))


def handle(data, context):
    """MMS entry point: initialise on the first call (data is None), then serve."""
    if data is None:
        _service.initialize(context)
        return None
    return _service.handle(data, context)
