"""Starting a distributed job: one ``python -m train`` per GPU and host under torchrun, rendezvous at the first host."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from train.errors import TrainingError

MASTER_PORT = 29500


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
