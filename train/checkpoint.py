"""Checkpoints for spot resume: written atomically, the newest complete one is loaded on start."""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from train.errors import TrainingError

log = logging.getLogger(__name__)

PATTERN = re.compile(r"^checkpoint-e(\d+)-s(\d+)\.pt$")
KEEP = 2


def name_for(epoch: int, step: int) -> str:
    """``epoch`` is the epoch in progress (0-based), ``step`` the batches of it already done."""
    return f"checkpoint-e{epoch:04d}-s{step:07d}.pt"


def rng_state() -> dict:
    """Every RNG the run uses, in types that ``torch.load(weights_only=True)`` accepts."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: Path, state: dict, epoch: int, step: int) -> Path:
    """Write to a temporary file and rename, so a kill mid-write never leaves a half checkpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name_for(epoch, step)
    temporary = directory / f".{final.name}.tmp-{os.getpid()}"
    try:
        torch.save(state, temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    except (OSError, RuntimeError) as exc:  # disk full, quota, read-only: torch reports some of these as RuntimeError
        temporary.unlink(missing_ok=True)  # the folder is synced to S3: leave no partial file behind
        raise TrainingError(
            f"Could not write the checkpoint {final} ({exc}). Free space on the job's volume or raise VolumeSizeInGB "
            "(byoc-launch train --volume-gb); the checkpoints already there are kept, so the job resumes from the "
            "last one."
        ) from exc
    for old in _sorted(directory)[:-KEEP]:
        old.unlink(missing_ok=True)
    return final


def _sorted(directory: Path) -> list[Path]:
    found = [
        (tuple(map(int, m.groups())), p) for p in directory.glob("checkpoint-*.pt") if (m := PATTERN.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def load_latest(directory: Path) -> dict | None:
    """The newest checkpoint that loads; unreadable ones are reported and skipped."""
    if not directory.is_dir():
        return None
    for path in reversed(_sorted(directory)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a partial S3 sync, or a file from another version
            log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
            continue
        log.info("resuming from %s (epoch %d, step %d)", path.name, state["epoch"] + 1, state["step"])
        return state
    return None
