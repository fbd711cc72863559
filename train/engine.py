"""One training epoch and one evaluation pass; plain loops over a loader of ``(images, labels, skipped)``."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from byoc_machine import cpu_flags
from train.errors import TrainingError
from train.profiler import StepTimer


@dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: torch.dtype | None

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[self.dtype]

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def resolve_precision(choice: str, device: torch.device) -> Precision:
    """``auto``: bf16 on GPUs that have it (else fp16), bf16 on CPUs with AVX512-BF16 or AMX, else fp32."""
    if choice == "auto":
        if device.type == "cuda":
            choice = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            choice = "bf16" if cpu_flags() & {"avx512_bf16", "amx_tile"} else "none"
    if choice == "fp16" and device.type != "cuda":
        raise TrainingError("--amp fp16 needs a GPU; on the CPU use --amp bf16 or --amp none.")
    return Precision(device.type, {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[choice])


@dataclass
class EpochProgress:
    """Running totals of the epoch in progress; stored in mid-epoch checkpoints."""

    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def state(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "interrupted"}


class DeviceInput:
    """How a batch from a loader becomes the network's input on the device.

    Image loaders yield uint8 batches: they are scaled and normalised here, on the device, so workers move a quarter
    of the bytes and the CPU skips the float work. Float batches (cached features) only move.
    """

    def __init__(self, device: torch.device, channels_last: bool, mean: tuple[float, ...], std: tuple[float, ...]):
        self.device = device
        self.channels_last = channels_last
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if images.dtype == torch.uint8:
            images = (images.float() - self.mean) / self.std
        return (
            images.contiguous(memory_format=torch.channels_last) if self.channels_last and images.dim() == 4 else images
        )


def _progress_bar(loader, description: str, total: int):
    return tqdm(loader, desc=description, total=total, leave=False, disable=not sys.stderr.isatty(), file=sys.stderr)


def train_one_epoch(
    forward: Callable[[torch.Tensor], torch.Tensor],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    loader,
    precision: Precision,
    inputs: DeviceInput,
    *,
    progress: EpochProgress,
    epoch: int,
    clip_grad_norm: float,
    should_stop: Callable[[], bool],
    timer: StepTimer,
    observe: Callable[[torch.Tensor, torch.Tensor], None] = lambda labels, logits: None,
) -> EpochProgress:
    """Train until the loader ends or ``should_stop()`` says so after a step (then ``progress.interrupted``).

    ``timer`` records each step's phases; ``observe(labels, logits)`` sees each batch before its loss.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    started = time.perf_counter()
    for images, labels, skipped in timer.timed(_progress_bar(loader, f"epoch {epoch + 1}", len(loader))):
        progress.step += 1
        progress.skipped.extend(skipped)
        if len(labels):
            images = inputs(images)
            labels = labels.to(inputs.device, non_blocking=True)
            with timer.phase("forward"), precision.autocast():
                logits = forward(images)
                observe(labels, logits)
                loss = loss_fn(logits.float(), labels)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"The training loss became {loss.item()} at epoch {epoch + 1}, step {progress.step}. "
                    "Lower --lr, set --clip-grad-norm 1.0, or try --amp none; check the data for broken labels."
                )
            with timer.phase("backward"):
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
            with timer.phase("optimizer"):
                if clip_grad_norm > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
            timer.end_step(epoch + 1, progress.step, len(labels))
            progress.loss_sum += loss.item() * len(labels)
            progress.correct += int((logits.argmax(dim=1) == labels).sum())
            progress.seen += len(labels)
        scheduler.step()
        if should_stop():
            progress.interrupted = True
            break
    progress.seconds += time.perf_counter() - started
    timer.flush()
    return progress


@torch.no_grad()
def predict(
    forward: Callable[[torch.Tensor], torch.Tensor],
    loader,
    precision: Precision,
    inputs: DeviceInput,
    description: str,
    loss_fn: nn.Module | None = None,
    observe: Callable[[torch.Tensor, torch.Tensor], None] = lambda labels, logits: None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Logits (float32) and targets of every readable sample, plus the positions skipped.

    ``loss_fn`` is called on each batch when a Debugger hook watches it, so rules see EVAL losses too;
    ``observe(labels, logits)`` sees each batch before it.
    """
    all_logits, all_targets, skipped_all = [], [], []
    for images, labels, skipped in _progress_bar(loader, description, len(loader)):
        skipped_all.extend(skipped)
        if not len(labels):
            continue
        images = inputs(images)
        with precision.autocast():
            logits = forward(images)
        observe(labels, logits)
        if loss_fn is not None:
            loss_fn(logits.float(), labels.to(inputs.device))
        all_logits.append(logits.float().cpu())
        all_targets.append(labels)
    if not all_logits:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), skipped_all
    return torch.cat(all_logits).numpy(), torch.cat(all_targets).numpy(), skipped_all


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy of logits against targets (NaN for no samples)."""
    if not len(targets):
        return math.nan
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(targets)), targets].mean())


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
