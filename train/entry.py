"""The image's ``train`` command: sagemaker-training's entry point, made safe for runs outside SageMaker.

The whole chain of a training job, from the container's command to the epochs:

1. ``train`` (this module's ``main``) fills in missing config files, then hands over to sagemaker-training;
2. the toolkit reads the job and calls ``SAGEMAKER_TRAINING_MODULE`` (``train.launcher:main``);
3. ``train.launcher`` turns hyperparameters into flags (``train.cli.parse_args``) and runs ``train.run.run_and_report``
   in its own process, or under torchrun (one process per GPU and host, each entering ``python -m train``).

Steps 1 and 2 are the toolkit's contract (it owns the SageMaker environment, the error files and the exit codes) and
cannot be merged without giving that up; ``python -m train`` (``train.cli.main``) starts at step 3, without the toolkit.

The toolkit needs ``/opt/ml/input/config/{resourceconfig,hyperparameters,inputdataconfig}.json``; when one is
missing it fails before our code runs and still exits 0 with nothing written. SageMaker always writes them; a
person running ``docker run -v ./opt_ml:/opt/ml IMAGE train`` may not. So: fill in single-host defaults where the
folder is writable, and turn "exited 0 without a success file" into a failure with a reason.
"""

from __future__ import annotations

import json
import logging
import sys

from train import sagemaker_env
from train.errors import write_failure

log = logging.getLogger("train.entry")


def default_configs(data_dir) -> dict[str, dict]:
    channels = sorted(p.name for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else []
    return {
        "resourceconfig.json": {"current_host": "algo-1", "hosts": ["algo-1"]},
        "hyperparameters.json": {},
        "inputdataconfig.json": {name: {"TrainingInputMode": "File"} for name in channels},
    }


def prepare(base) -> str | None:
    """Create the output folders and any missing config file; returns a failure reason, or None."""
    for folder in (base / "output" / "data", base / "model"):
        folder.mkdir(parents=True, exist_ok=True)
    config = base / "input" / "config"
    for name, content in default_configs(base / "input" / "data").items():
        path = config / name
        if path.is_file():
            continue
        try:
            config.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content))
        except OSError as exc:
            return (
                f"{path} is missing and cannot be created ({exc.strerror}). SageMaker writes it for a training job; "
                f"for a local run, add it to the mounted folder, e.g. {json.dumps(content)}."
            )
        print(f"{path.name} was missing: running with {json.dumps(content)}", file=sys.stderr, flush=True)
    return None


def main() -> None:
    base = sagemaker_env.base_dir()
    reason = prepare(base)
    if reason:
        write_failure(reason)
        print(f"error: {reason}", file=sys.stderr)
        sys.exit(1)
    from sagemaker_training import trainer

    try:
        trainer.train()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    success, failure = base / "output" / "success", sagemaker_env.failure_file()
    if code == 0 and not success.exists():
        reason = (
            failure.read_text().strip() if failure.is_file() else "sagemaker-training stopped before the trainer ran"
        )
        write_failure(reason)
        print(f"error: {reason}", file=sys.stderr)
        code = 1
    sys.exit(code)
