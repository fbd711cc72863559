"""What a class activation map needs, taken from the network at export: its last convolutional feature map as a
second output, and its head (global average pool -> [LayerNorm] -> one Linear) as plain arrays, so serving computes
the map without torch. Networks whose head is anything else are exported without it, with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

TORCHVISION_FAMILIES = ("resnet", "resnext", "wide_resnet", "regnet", "efficientnet", "convnext", "mobilenet_v2")
TIMM_CLASSES = ("EfficientNet", "ResNet")
FEATURES = "features"
HEAD_FILE = "cam_head.npz"
TOLERANCE = 1e-5


class TwoOutputs(nn.Module):
    """``(logits, feature map)``: the network split into its convolutional part and its pooled linear head."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature_map = self.features(x)
        return self.head(feature_map), feature_map


class TimmFeatures(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class TimmHead(TimmFeatures):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(x)


def split(model: nn.Module, arch: str) -> TwoOutputs | str:
    """The network as :class:`TwoOutputs`, or why a class activation map cannot be computed for it."""
    if arch.startswith("timm/"):
        pooled_avg = getattr(getattr(model, "global_pool", None), "pool_type", None) == "avg"
        if (
            type(model).__name__ not in TIMM_CLASSES
            or not pooled_avg
            or not isinstance(model.get_classifier(), nn.Linear)
        ):
            return f"{arch} has no global-average-pool + linear head that explanations are built for"
        return TwoOutputs(TimmFeatures(model), TimmHead(model))
    if not arch.startswith(TORCHVISION_FAMILIES):
        return (
            f"{arch} has no global-average-pool + linear head that explanations are built for (ResNets, "
            "EfficientNets, MobileNetV2, ConvNeXts, RegNets)"
        )
    children = dict(model.named_children())
    if arch.startswith("mobilenet_v2"):
        return TwoOutputs(
            children["features"], nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), children["classifier"])
        )
    names = list(children)
    features = nn.Sequential(*[children[n] for n in names[: names.index("avgpool")]])
    classifier = children.get("fc") or children["classifier"]
    if arch.startswith("convnext"):  # its classifier normalises the pooled (N, C, 1, 1) map, then flattens
        return TwoOutputs(features, nn.Sequential(children["avgpool"], classifier))
    return TwoOutputs(features, nn.Sequential(children["avgpool"], nn.Flatten(1), classifier))


def head_arrays(network: TwoOutputs) -> dict[str, np.ndarray]:
    """The head's Linear (``weight``, ``bias``) and, for ConvNeXt, the LayerNorm before it (``norm_*``)."""
    linears = [m for m in network.head.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in network.head.modules() if isinstance(m, nn.LayerNorm)]
    if len(linears) != 1 or len(norms) > 1:
        raise ValueError("the head is not one Linear layer (after at most one LayerNorm)")
    arrays = {"weight": linears[0].weight, "bias": linears[0].bias}
    if norms:
        arrays.update(norm_weight=norms[0].weight, norm_bias=norms[0].bias, norm_eps=torch.tensor(norms[0].eps))
    return {k: v.detach().float().cpu().numpy() for k, v in arrays.items()}


def explainable(
    model: nn.Module, arch: str, sample: torch.Tensor
) -> tuple[TwoOutputs | None, dict[str, np.ndarray] | None, str | None]:
    """(the two-output network, its head's arrays, None), or (None, None, the reason explanations are unavailable).
    The split must give the network's own logits: otherwise its forward is not features -> pool -> linear."""
    network = split(model, arch)
    if isinstance(network, str):
        return None, None, network
    try:
        arrays = head_arrays(network)
        with torch.no_grad():
            same = torch.allclose(network(sample)[0], model(sample), atol=TOLERANCE, rtol=0)
    except (ValueError, KeyError, RuntimeError) as exc:
        return None, None, f"{arch}: its head cannot be split off for explanations ({exc})"
    if not same:
        return (
            None,
            None,
            f"{arch}: its forward is not features -> global average pool -> linear, so explanations are not available",
        )
    return network, arrays, None


def save_head(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Plain arrays in an .npz (read back with ``allow_pickle=False``)."""
    np.savez(path, **arrays)
