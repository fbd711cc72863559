"""The artifact's network in torch for the peers, and the CPU settings their docs offer.

Every peer loads the same weights (``weights.safetensors`` + ``model.json`` of our artifact) into the torchvision
architecture, and runs it in one of these modes:

- ``eager``: torch eager fp32, what every peer does by default;
- ``bf16``: bf16 autocast + channels_last (torch's CPU performance guide);
- ``inductor-bf16``: the same under ``torch.compile`` (default inductor backend);
- ``openvino``: ``torch.compile(backend="openvino")`` (OpenVINO's torch.compile docs, TorchServe's pt2 example) with
  its ``aot_autograd`` option, which those docs recommend for dynamic shapes (a server's batches vary); without it,
  torch 2.14+ fails in dynamo's guards ("sources must not be empty for symbol").
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file
from torchvision import transforms

MODES = ("eager", "bf16", "inductor-bf16", "openvino")


def load(model_dir: Path) -> tuple[torch.nn.Module, dict]:
    """(the network in eval mode with the artifact's weights, model.json)."""
    info = json.loads((model_dir / "model.json").read_text())  # raw, as another stack would: no byoc packages here
    model = torchvision.models.get_model(info["architecture"], num_classes=info["num_classes"])
    model.load_state_dict(load_file(model_dir / "weights.safetensors"))
    return model.eval(), info


def eval_transform(info: dict) -> transforms.Compose:
    """model.json's preprocessing as torchvision transforms (resize, center crop, normalise)."""
    pre = info["preprocess"]
    return transforms.Compose(
        [
            transforms.Resize(pre["resize"]),
            transforms.CenterCrop(pre["crop"]),
            transforms.ToTensor(),
            transforms.Normalize(pre["mean"], pre["std"]),
        ]
    )


def prepare(model: torch.nn.Module, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A batch -> logits function running ``model`` in ``mode`` (no gradients)."""
    if mode not in MODES:
        raise SystemExit(f"PEER_MODE={mode!r}: use one of {', '.join(MODES)}")
    autocast = mode in ("bf16", "inductor-bf16")
    if autocast:
        model = model.to(memory_format=torch.channels_last)
    if mode == "inductor-bf16":
        model = torch.compile(model, dynamic=True)  # one graph for every batch size the server forms
    if mode == "openvino":
        import openvino.torch  # noqa: F401  (registers the backend)

        model = torch.compile(model, backend="openvino", dynamic=True, options={"aot_autograd": True})

    def forward(batch: torch.Tensor) -> torch.Tensor:
        if autocast:
            batch = batch.contiguous(memory_format=torch.channels_last)
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with torch.inference_mode(), cast:
            return model(batch).float()

    return forward


def mode_from_env() -> str:
    return os.environ.get("PEER_MODE", "eager")
