"""SageMaker's ``train`` command lands here (``SAGEMAKER_TRAINING_MODULE=train.launcher:main``).

It turns the job's hyperparameters into trainer flags and runs the trainer, in this process or, when
``sagemaker_torch_distributed_enabled`` is set, under torchrun across the job's GPUs and hosts.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import sys
import time

import torch

from train import sagemaker_env
from train.cli import parse_args
from train.errors import TrainingError, write_failure
from train.run import configure_logging, run_and_report

log = logging.getLogger("train.launcher")
MASTER_PORT = 29500


def describe_accelerators() -> str:
    """One line on torch, CUDA and the NVIDIA driver; fails clearly when GPUs are there but unusable."""
    line = f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})"
    smi = shutil.which("nvidia-smi")
    driver = ""
    if smi:
        result = subprocess.run(
            [smi, "--query-gpu=driver_version,name", "--format=csv,noheader"], capture_output=True, text=True
        )
        driver = result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else ""
    if driver and not torch.cuda.is_available():
        raise TrainingError(
            f"This host has GPUs (driver, GPU: {driver}) but {line} cannot use them: its CUDA needs a newer driver. "
            "Rebuild the image with a torch build for an older CUDA (--build-arg "
            "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 "
            "runs on drivers >= 525), or use an instance with a newer driver."
        )
    if torch.cuda.is_available():
        return (
            f"{line}, driver {driver or 'unknown'}, {torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}"
        )
    return f"{line}, no GPU: training on the CPU"


def torchrun_command(argv: list[str], hosts: list[str], current_host: str, processes_per_host: int) -> list[str]:
    """torchrun for this host: standalone on one host, else rendezvous at the first host."""
    if len(hosts) == 1:
        placement = ["--standalone"]
    else:
        placement = [
            f"--nnodes={len(hosts)}",
            f"--node-rank={hosts.index(current_host)}",
            f"--master-addr={hosts[0]}",
            f"--master-port={MASTER_PORT}",
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *placement,
        f"--nproc-per-node={processes_per_host}",
        "-m",
        "train",
        *argv,
    ]


def wait_for_host(host: str, seconds: float = 600) -> None:
    """SageMaker's DNS names for the other hosts can take a while to resolve at start."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.gethostbyname(host)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TrainingError(
                    f"The first host '{host}' did not resolve within {seconds:.0f} s; check the job's VPC/DNS settings."
                ) from None
            time.sleep(2)


def run_torchrun(command: list[str]) -> int:
    """Run torchrun, passing SIGTERM on so every rank can checkpoint before the job stops."""
    child = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    """Run the job; on failure raise the toolkit's ClientError, so it writes our reason and exits 1."""
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
