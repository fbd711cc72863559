"""The training state that outlives an epoch: what a checkpoint stores besides the model and optimiser, and
how an epoch's result updates it (history, best weights, early-stopping count)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from train import checkpoint
from train.engine import EpochProgress
from train.errors import TrainingError

log = logging.getLogger("train")


@dataclass
class Trainables:
    """The objects whose state a checkpoint carries."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


@dataclass
class TrainingState:
    epoch: int = 0  # epochs finished
    progress: EpochProgress = field(default_factory=EpochProgress)  # the epoch in progress
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"value": None, "epoch": 0, "weights": None})
    bad_epochs: int = 0
    skipped: set[str] = field(default_factory=set)

    def save(self, directory: Path, parts: Trainables) -> None:
        """Checkpoint at the epoch in progress (``epoch``, 0-based) and its finished steps."""
        state = {
            "epoch": self.epoch,
            "step": self.progress.step,
            "model": parts.model.state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict(),
            "rng": checkpoint.rng_state(),
            "progress": self.progress.state(),
            "history": self.history,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "skipped": sorted(self.skipped),
        }
        checkpoint.save(directory, state, self.epoch, self.progress.step)

    @classmethod
    def restore(cls, directory: Path, parts: Trainables) -> TrainingState | None:
        """The state of the newest readable checkpoint in ``directory``, loaded into ``parts``; None when there is
        none."""
        saved = checkpoint.load_latest(directory)
        if saved is None:
            return None
        try:
            parts.model.load_state_dict(saved["model"])
            parts.optimizer.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainingError(
                f"The checkpoint in {directory} was written by a different model or settings ({exc}). "
                "Use an empty checkpoint location for a new job, or the same --model/--finetune to resume."
            ) from exc
        parts.scheduler.load_state_dict(saved["scheduler"])
        parts.scaler.load_state_dict(saved["scaler"])
        checkpoint.restore_rng(saved["rng"])
        return cls(
            epoch=saved["epoch"],
            progress=EpochProgress(**saved["progress"]),
            history=saved["history"],
            best=saved["best"],
            bad_epochs=saved["bad_epochs"],
            skipped=set(saved["skipped"]),
        )

    def end_epoch(self, row: dict, metric: str, model: nn.Module) -> None:
        """Record a finished epoch; keep a copy of the weights when ``metric`` improved (loss: lower is better)."""
        self.epoch += 1
        self.history.append({"epoch": self.epoch, **row})
        value, best = row[metric], self.best["value"]
        improved = best is None or (value < best if metric.endswith("loss") else value > best)
        if improved:
            self.best = {
                "value": value,
                "epoch": self.epoch,
                "weights": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        self.progress = EpochProgress()

    def load_best(self, model: nn.Module, metric: str) -> None:
        """Put the best epoch's weights back into ``model`` (when an epoch was recorded)."""
        if self.best["weights"] is not None:
            model.load_state_dict(self.best["weights"])
            log.info("using the weights of epoch %d (best %s = %.4f)", self.best["epoch"], metric, self.best["value"])
