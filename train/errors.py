"""Failures a user can act on, and how they are reported to SageMaker."""

from __future__ import annotations

import logging
from pathlib import Path

from train import sagemaker_env

log = logging.getLogger(__name__)

FAILURE_REASON_LIMIT = 1024  # SageMaker shows this many characters of /opt/ml/output/failure


class TrainingError(Exception):
    """A failure caused by the input or the settings; the message says what to change."""


def reason_of(exc: TrainingError) -> str:
    """What a TrainingError says, also when a DataLoader worker raised it: torch then re-raises it in the main process
    with the worker's whole traceback as its message, ours on the last line, and the traceback would fill the failure
    reason's 1,024 characters before it."""
    text, marker = str(exc), f"{TrainingError.__name__}: "
    if text.startswith(f"Caught {TrainingError.__name__} in DataLoader worker") and marker in text:
        return text.rsplit(marker, 1)[1].strip()
    return text


class Interrupted(Exception):
    """The job was stopped by a signal (spot interruption) after saving a checkpoint."""


def write_failure(reason: str, path: Path | None = None) -> Path:
    """Write the one-paragraph failure reason where SageMaker reads it."""
    path = path or sagemaker_env.failure_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(reason.strip()[:FAILURE_REASON_LIMIT] + "\n")
    return path
