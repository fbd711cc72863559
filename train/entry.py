"""The training image's whole chain, from the container's command to the epochs, in two functions of this module.

1. ``train`` (``main``) fills in missing config files, then hands over to sagemaker-training (``trainer.train()``);
2. the toolkit reads the job and calls ``SAGEMAKER_TRAINING_MODULE``, which is ``train.entry:run_job``;
3. ``run_job`` turns the hyperparameters into flags (``train.cli.parse_args``) and runs ``train.run.run_and_report`` in
   this process, or under torchrun (``train.torchrun``: one ``python -m train`` per GPU and host).

The hop through the toolkit is its contract (it owns the SageMaker environment, the error files and the exit codes),
so it stays; everything on either side of it is here. ``python -m train`` (``train.cli.main``) starts at step 3,
without the toolkit.

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
from train.accelerators import describe_accelerators
from train.cli import parse_args
from train.errors import TrainingError, write_failure
from train.run import configure_logging, run_and_report
from train.torchrun import run_torchrun, torchrun_command, wait_for_host

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


def run_job() -> None:
    """The toolkit's callback: run the job; on failure raise its ClientError, so it writes our reason and exits 1."""
    from sagemaker_training import errors, mapping

    configure_logging(True)
    env = sagemaker_env.toolkit_environment()

    # SageMaker's own keys start with "_" (e.g. the tuner's _tuning_objective_metric): not trainer flags.
    argv = [
        str(a) for a in mapping.to_cmd_args({k: v for k, v in env.hyperparameters.items() if not k.startswith("_")})
    ]
    extra = env.additional_framework_parameters
    try:
        log.info("%s", describe_accelerators())
        args = parse_args(argv)
        log.info("hyperparameters: %s", " ".join(argv) or "(none)")
        if str(extra.get("sagemaker_torch_distributed_enabled", "false")).lower() == "true":
            per_host = int(extra.get("sagemaker_processes_per_host") or max(env.num_gpus, 1))
            if len(env.hosts) > 1:
                wait_for_host(env.hosts[0])
            command = torchrun_command(argv, env.hosts, env.current_host, per_host)
            log.info("distributed: %d host(s) x %d process(es): %s", len(env.hosts), per_host, " ".join(command))
            code = run_torchrun(command)
        else:
            code = run_and_report(args)
    except TrainingError as exc:
        write_failure(str(exc))
        code = 1
    if code != 0:
        failure = sagemaker_env.failure_file()
        reason = failure.read_text().strip() if failure.is_file() else f"training exited with code {code}"
        raise errors.ClientError(reason)
