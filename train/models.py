"""Classifier networks by name (torchvision, or timm with ``timm/``), their heads, stages and weights."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from train.errors import TrainingError

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm/"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POLICIES = ("head", "last-k", "full")


@dataclass
class Network:
    """A classifier with its head replaced for our classes."""

    model: nn.Module
    arch: str
    head_prefix: str
    stage_groups: list[list[str]]  # backbone parameter names by stage, input side first
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str

    @property
    def head(self) -> nn.Module:
        return self.model.get_submodule(self.head_prefix)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _groups_by_prefix(model: nn.Module, prefixes: list[str], head_prefix: str) -> list[list[str]]:
    """Backbone parameter names grouped by stage prefix; parameters outside every stage (the stem, a final
    norm) join the stage they follow, or the first stage."""
    groups: list[list[str]] = [[] for _ in prefixes] or [[]]
    current = 0
    for name, _ in model.named_parameters():
        if _under(name, head_prefix):
            continue
        current = next((i for i, prefix in enumerate(prefixes) if _under(name, prefix)), current)
        groups[current].append(name)
    return [g for g in groups if g]


def available_models() -> list[str]:
    import timm
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models)) + [
        TIMM_PREFIX + n for n in timm.list_models()
    ]


def _unknown_model(name: str) -> TrainingError:
    close = difflib.get_close_matches(name, available_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return TrainingError(
        f"Unknown model '{name}'.{hint} Use a torchvision classification model name (resnet50, "
        "efficientnet_b0, convnext_tiny, vit_b_16, ...) or a timm model as 'timm/<name>'."
    )


def build_network(arch: str, num_classes: int, pretrained: str) -> Network:
    """Create ``arch`` with a fresh ``num_classes`` head.

    ``pretrained``: ``none``, ``imagenet`` (download from torchvision/timm), or a weights file path.
    """
    if arch.startswith(TIMM_PREFIX):
        net = _build_timm(arch[len(TIMM_PREFIX) :], pretrained == "imagenet")
    else:
        net = _build_torchvision(arch, pretrained == "imagenet")
    net.arch = arch
    _replace_head(net, num_classes)
    if pretrained not in ("none", "imagenet"):
        load_weights(net, Path(pretrained))
    return net


def _build_timm(name: str, download: bool) -> Network:
    import timm

    if name not in timm.list_models():
        raise _unknown_model(TIMM_PREFIX + name)
    try:
        model = timm.create_model(name, pretrained=download)
    except Exception as exc:
        raise _download_failed(TIMM_PREFIX + name, exc) from exc
    cfg = model.pretrained_cfg
    head_prefix = cfg.get("classifier", "classifier")
    from timm.models import group_parameters

    groups = group_parameters(model, model.group_matcher(coarse=True)).values()
    stages = [[n for n in names if not _under(n, head_prefix)] for names in groups]
    return Network(
        model=model,
        arch=name,
        head_prefix=head_prefix,
        stage_groups=[g for g in stages if g],
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        interpolation=cfg.get("interpolation", "bicubic")
        if cfg.get("interpolation") in ("bilinear", "bicubic")
        else "bilinear",
    )


def _build_torchvision(name: str, download: bool) -> Network:
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise _unknown_model(name)
    try:
        model = torchvision.models.get_model(name, weights="DEFAULT" if download else None)
    except Exception as exc:
        raise _download_failed(name, exc) from exc
    head_prefix = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    return Network(
        model=model,
        arch=name,
        head_prefix=head_prefix,
        stage_groups=_groups_by_prefix(model, _torchvision_stages(model, head_prefix), head_prefix),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",
    )


def _torchvision_stages(model: nn.Module, head_prefix: str) -> list[str]:
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        return [f"features.{n}" for n, _ in features.named_children()]
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if isinstance(layers, nn.Sequential):
        return [f"encoder.layers.{n}" for n, _ in layers.named_children()]
    named = [n for n, m in model.named_children() if any(True for _ in m.parameters()) and not _under(head_prefix, n)]
    stacked = [n for n in named if n.startswith("layer")]
    return stacked or named


def _download_failed(arch: str, exc: Exception) -> TrainingError:
    return TrainingError(
        f"Could not download the ImageNet weights of {arch} ({type(exc).__name__}: {exc}). Without internet "
        "access, pass the weights file with --pretrained /path/to/weights (.pth state dict or .safetensors) "
        "or as the 'pretrained' input channel, or train from scratch with --pretrained none."
    )


def _replace_head(net: Network, num_classes: int) -> None:
    old = net.head
    if hasattr(net.model, "reset_classifier"):
        net.model.reset_classifier(num_classes)
        return
    parent_name, _, child = net.head_prefix.rpartition(".")
    parent = net.model.get_submodule(parent_name) if parent_name else net.model
    setattr(parent, child, nn.Linear(old.in_features, num_classes))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch state dict (loaded with weights_only=True)."""
    if not path.is_file():
        raise TrainingError(
            f"Pretrained weights file {path} does not exist; check --pretrained or the 'pretrained' channel."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(
            f"Cannot read weights from {path} ({exc}). Give a .safetensors file or a plain state dict saved "
            "with torch.save(model.state_dict()); pickled model objects are refused for safety."
        ) from exc
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {
        k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items() if isinstance(v, torch.Tensor)
    }


def load_weights(net: Network, path: Path) -> None:
    """Load a backbone's weights: by name, or by position when another implementation named them differently
    but every tensor shape lines up (e.g. the EfficientNet-Lite0 file into timm's tf_efficientnet_lite0).
    The head's tensors are loaded too when their shapes fit (further fine-tuning of our own artifact)."""
    state = read_state_dict(path)
    target = net.model.state_dict()
    body = [k for k in target if not _under(k, net.head_prefix)]
    if all(k in state and state[k].shape == target[k].shape for k in body):
        mapped = {k: state[k] for k in target if k in state and state[k].shape == target[k].shape}
        how = "by name"
    else:
        values = list(state.values())
        if len(values) not in (len(body), len(target)) or any(
            v.shape != target[k].shape for k, v in zip(body, values, strict=False)
        ):
            missing = [k for k in body if k not in state]
            raise TrainingError(
                f"The weights in {path} do not fit {net.arch}: {len(missing)} of its {len(body)} backbone tensors "
                f"are missing (first: {', '.join(missing[:3])}) and they do not line up by position either. "
                "Use the weights of the same architecture, or pick the matching --model."
            )
        mapped = {k: v for k, v in zip(target, values, strict=False) if v.shape == target[k].shape}
        how = "by position"
    net.model.load_state_dict(mapped, strict=False)
    fresh = len(target) - len(mapped)
    log.info("loaded %d pretrained tensors from %s (%s); %d head tensors start fresh", len(mapped), path, how, fresh)


def set_policy(net: Network, policy: str, unfreeze_stages: int) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Freeze the backbone as the policy says; return (head params, trainable backbone params)."""
    params = dict(net.model.named_parameters())
    groups = net.stage_groups
    if policy == "full":
        trainable = {n for g in groups for n in g}
    elif policy == "last-k":
        if unfreeze_stages < 1:
            raise TrainingError("--finetune last-k needs --unfreeze-stages 1 or more.")
        trainable = {n for g in groups[-unfreeze_stages:] for n in g}
    elif policy == "head":
        trainable = set()
    else:
        raise TrainingError(f"Unknown --finetune '{policy}'; use one of {', '.join(POLICIES)}.")
    head, backbone = [], []
    for name, param in params.items():
        in_head = _under(name, net.head_prefix)
        param.requires_grad_(in_head or name in trainable)
        if in_head:
            head.append(param)
        elif name in trainable:
            backbone.append(param)
    return head, backbone


def train_mode(model: nn.Module) -> None:
    """``model.train()``, but normalisation layers whose parameters are all frozen keep their running stats."""
    model.train()
    for module in model.modules():
        if hasattr(module, "running_mean") and not any(p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()
